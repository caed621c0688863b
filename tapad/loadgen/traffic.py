"""The traffic mix the server is built for: most events in the current hour, some in the past.

Every request is made on the fly from precomputed parts (the path, the quoted names,
the hour bounds), because at tens of thousands of requests a second anything heavier than a
few ``random()`` calls and one f-string shows up in the throughput.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from dataclasses import dataclass
from urllib.parse import quote

from yarl import URL

from tapad.buckets import MS_PER_HOUR


@dataclass(frozen=True)
class Mix:
    old_ratio: float = 0.05  # share of requests for past hours
    old_hours: int = 24  # how far back past hours go
    click_ratio: float = 0.02  # share of POSTs that are clicks: a 2% click-through rate

    def check(self) -> None:
        """Refuse a mix that cannot be made, with the option name in the message."""
        if not 0.0 <= self.old_ratio <= 1.0:
            raise ValueError(f"--old-ratio must be between 0 and 1, got {self.old_ratio}")
        if not 0.0 <= self.click_ratio <= 1.0:
            raise ValueError(f"--click-ratio must be between 0 and 1, got {self.click_ratio}")
        if self.old_hours < 0:
            raise ValueError(f"--old-hours must be 0 or more, got {self.old_hours}")
        if self.old_ratio > 0 and self.old_hours == 0:
            raise ValueError("--old-ratio above 0 needs --old-hours of at least 1")


class Traffic:
    """Makes request URLs for ``base`` (``http://host:port/analytics``) with the given mix.

    Current-hour timestamps fall between the start of the current UTC hour and the
    moment the run started, so none is in the future; past ones spread evenly over the
    ``old_hours`` hours before it.

    With ``ids``, every event carries an id: a random prefix drawn when the traffic is made
    (in each load process, after any fork) and a counter, unique across processes and runs
    at the cost of one string concatenation, where a UUID per event would show up in the
    throughput. A retry resends the request as made, so its events keep their ids.
    """

    def __init__(
        self,
        base: str,
        users: list[str],
        mix: Mix,
        *,
        now_ms: int | None = None,
        seed: int | None = None,
        ids: bool = False,
    ) -> None:
        if not users:
            raise ValueError("no user names to send")
        self.base = base
        self._path = URL(base).raw_path or "/"  # requests are its path and a query
        self.users = users
        self.quoted = [quote(user, safe="") for user in users]
        self._batch_path = self._path.rstrip("/") + "/batch"
        self._json_users: list[str] | None = None  # made on the first batch
        self.mix = mix
        now = int(time.time() * 1000) if now_ms is None else now_ms
        self.current_hour = now // MS_PER_HOUR
        self._hour_start = self.current_hour * MS_PER_HOUR
        self._span = now - self._hour_start + 1
        rng = random.Random(seed)
        self._random = rng.random
        # os.urandom, not the seeded stream: two runs with one --seed must not share ids
        self._id_prefix = os.urandom(8).hex() + "-" if ids else ""
        self._ids = itertools.count(1)

    def _timestamp(self) -> int:
        rand = self._random
        if rand() < self.mix.old_ratio:
            back = 1 + int(rand() * self.mix.old_hours)
            return self._hour_start - back * MS_PER_HOUR + int(rand() * MS_PER_HOUR)
        return self._hour_start + int(rand() * self._span)

    def post(self) -> tuple[str, tuple[int, int, bool]]:
        """One POST's path and query, and what it records: (hour, user index, click)."""
        ts = self._timestamp()
        index = int(self._random() * len(self.users))
        click = self._random() < self.mix.click_ratio
        kind = "click" if click else "impression"
        target = f"{self._path}?timestamp={ts}&user={self.quoted[index]}&{kind}"
        if self._id_prefix:
            target += f"&id={self._id_prefix}{next(self._ids)}"
        return target, (ts // MS_PER_HOUR, index, click)

    def post_batch(self, count: int) -> tuple[str, list[tuple[int, int, bool]], bytes]:
        """One ``POST /analytics/batch`` of ``count`` events (NDJSON), with the same mix as
        ``post``: its path, what each event records, and the body."""
        if self._json_users is None:
            self._json_users = [json.dumps(user) for user in self.users]
        names = self._json_users
        rand, ratio, size = self._random, self.mix.click_ratio, len(self.users)
        prefix, ids = self._id_prefix, self._ids
        tokens = []
        lines = []
        for _ in range(count):
            ts = self._timestamp()
            index = int(rand() * size)
            click = rand() < ratio
            kind = "click" if click else "impression"
            if prefix:
                lines.append(
                    f'{{"timestamp":{ts},"user":{names[index]},"event":"{kind}",'
                    f'"id":"{prefix}{next(ids)}"}}\n'
                )
            else:
                lines.append(f'{{"timestamp":{ts},"user":{names[index]},"event":"{kind}"}}\n')
            tokens.append((ts // MS_PER_HOUR, index, click))
        return self._batch_path, tokens, "".join(lines).encode()

    def get(self) -> tuple[str, int]:
        """One GET's path and query, and the hour it asks about."""
        ts = self._timestamp()
        return f"{self._path}?timestamp={ts}", ts // MS_PER_HOUR
