"""Many servers, one truth: three tapad servers on one Redis behind the project's nginx.

Real processes only: redis-server, three ``tapad serve`` (one with ``--workers 2``)
and the OS's nginx running ``deploy/nginx.conf`` with its upstream servers replaced
by the three local ones. POSTs go concurrently through every entry point; afterwards
every entry point answers every hour with exactly the ground truth.
"""

from __future__ import annotations

import random
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import LOOPBACK, NGINX, Nginx, TapadServer, http, parse_counts

ROOT = Path(__file__).resolve().parent.parent
NOW_MS = int(time.time() * 1000)
HOURS_MS = [NOW_MS - h * 3_600_000 for h in range(4)]  # the current hour and three past ones

pytestmark = pytest.mark.skipif(
    not Path(NGINX).exists() and shutil.which("nginx") is None,
    reason="nginx is not installed (apt-get install -y nginx-light)",
)


def established_to(port: int) -> int:
    """Open TCP connections whose server side is ``port`` (nginx's kept-alive upstreams)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


@pytest.fixture
def stack(redis_url: str, tmp_path: Path) -> Iterator[tuple[Nginx, list[TapadServer]]]:
    servers = [
        TapadServer(redis_url),
        TapadServer(redis_url),
        TapadServer(redis_url, "--workers", "2"),
    ]
    nginx = None
    try:
        for server in servers:
            server.start()
        conf = (ROOT / "deploy" / "nginx.conf").read_text()
        nginx = Nginx(tmp_path / "nginx", conf, [f"{LOOPBACK}:{s.port}" for s in servers])
        nginx.start()
        yield nginx, servers
    finally:
        if nginx is not None:
            nginx.stop()
        for server in servers:
            server.stop()


def test_every_entry_point_answers_the_ground_truth(
    stack: tuple[Nginx, list[TapadServer]],
) -> None:
    nginx, servers = stack
    entries = [nginx.url, *(s.url for s in servers)]
    rng = random.Random(3)
    events = []
    for i in range(1600):
        ts = HOURS_MS[0] if rng.random() < 0.95 else rng.choice(HOURS_MS[1:])
        user = f"user-{rng.randrange(400)}"
        kind = "click" if rng.random() < 0.3 else "impression"
        # Half of the traffic through nginx, the rest straight to each server.
        entry = nginx.url if i % 2 == 0 else servers[(i // 2) % 3].url
        events.append((entry, ts, user, kind))

    def post(event: tuple[str, int, str, str]) -> int:
        entry, ts, user, kind = event
        return http("POST", f"{entry}/analytics?timestamp={ts}&user={user}&{kind}")[0]

    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(post, events))
    assert Counter(codes) == {200: len(events)}

    # nginx spread its half over all three servers and keeps connections to them open.
    for server in servers:
        assert established_to(server.port) >= 1, f"nginx never used {server.url}"

    for ts in HOURS_MS:
        hour = ts // 3_600_000
        mine = [e for e in events if e[1] // 3_600_000 == hour]
        kinds = Counter(kind for *_, kind in mine)
        truth = {
            "unique_users": len({user for _, _, user, _ in mine}),
            "clicks": kinds["click"],
            "impressions": kinds["impression"],
        }
        for entry in entries:
            status, _, body = http("GET", f"{entry}/analytics?timestamp={ts}")
            assert status == 200, (entry, body)
            assert parse_counts(body) == truth, entry


def test_nginx_keeps_metrics_private(tmp_path: Path) -> None:
    """/metrics is per server; the public entry point refuses it instead of showing one replica."""
    srv = TapadServer(f"sqlite:///{tmp_path}/m.db").start()
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    nginx = Nginx(tmp_path / "nginx", conf, [f"{LOOPBACK}:{srv.port}"]).start()
    try:
        assert http("GET", f"{nginx.url}/metrics")[0] == 403
        assert http("GET", f"{nginx.url}/healthz")[0] == 200
        assert http("GET", f"{srv.url}/metrics")[0] == 200
    finally:
        nginx.stop()
        srv.stop()
