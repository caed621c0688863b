"""A Redis store's first words with the server: adopt the layout the store was set up
with (shards, unique-users mode, retention, hash tags), writing ours where there is none.

Apart from the key schema (keys.py), which only names keys and packs commands, because
this is the one part of it that talks to the server, once per connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tapad.store.base import StoreConfigError
from tapad.store.redis.keys import EXEC, MULTI, KeyLayout
from tapad.store.redis.protocol import pack


async def check_layout(
    layout: KeyLayout,
    send: Callable[[list[bytes]], Awaitable[list[Any]]],
    choose_tags: Callable[[int], list[str]] | None = None,
) -> None:
    """Adopt the store's layout, writing ours first if it has none; refuse a mismatch.
    ``send`` runs commands on the node holding the layout key and returns the replies.

    With ``choose_tags`` (a cluster: the hash tag of each of n shards), a store without
    a layout gets one with tags, written whole in one transaction so that two servers
    starting at once cannot mix their values. A layout already there is adopted as it
    is: without tags, its keys keep the {hour.shard} scheme."""
    if choose_tags is not None:
        (existing,) = await send([pack(("EXISTS", layout.layout_key))])
        if not existing:
            tags = choose_tags(layout.shards)
            await send(
                [
                    MULTI,
                    *layout.check_commands()[:-1],
                    pack(("HSETNX", layout.layout_key, "tags", ",".join(tags))),
                    EXEC,
                ]
            )
    raw = (await send(layout.check_commands()))[-1]
    theirs = {raw[i].decode(): raw[i + 1].decode() for i in range(0, len(raw), 2)}
    for name, value in layout.asked.items():
        if value is not None and theirs.get(name) != value:
            raise StoreConfigError(
                f"the store was set up with shards={theirs.get('shards')} "
                f"unique={theirs.get('unique')} retention={theirs.get('retention')} "
                f"(hours; 0: for ever), this server asks for {name}={value}: "
                "start it with the store's values, or use another key prefix (?prefix=)"
            )
    layout.shards = int(theirs["shards"])
    layout.unique = theirs["unique"]
    layout.retention = int(theirs["retention"])
    layout.tags = theirs["tags"].split(",") if "tags" in theirs else None
    if layout.tags is not None and len(layout.tags) != layout.shards:
        raise StoreConfigError(
            f"the store's layout is inconsistent: shards={layout.shards} but "
            f"{len(layout.tags)} tags ({layout.layout_key} tags={theirs['tags']})"
        )
