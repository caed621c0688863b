"""``--store redis+cluster://``: a real three-master Redis Cluster, real tapad servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tapad.adapters.redis_py import key_slot
from tapad.server.writer import GroupCommitter
from tapad.store import Event, HourCounts, PartialWrite, StoreError, StoreOptions, open_store
from tapad.store.redis.cluster import ClusterStore
from tapad.store.redis.keys import KeyLayout
from tests.support import (
    RedisClusterProcs,
    RedisServer,
    TapadServer,
    http,
    parse_counts,
    wait_until,
)

NOW_MS = int(time.time() * 1000)
HOUR = NOW_MS // 3_600_000
PAST_MS = NOW_MS - 5 * 3_600_000
SHARDS = 3  # a new store on three masters: a shard per master


def hour_keys(hour: int) -> str:
    """The pattern of an hour's keys in a new store ({tag}:hour:u, :h and :n; not markers)."""
    return f"tapad:{{*}}:{hour}:*"


def stored_layout(url: str) -> KeyLayout:
    """The layout a server on ``url`` uses (creating the store's if it has none yet)."""

    async def go() -> KeyLayout:
        store = open_store(url)
        assert isinstance(store, ClusterStore)
        try:
            await store.connect()
            return store.layout
        finally:
            await store.close()

    return asyncio.run(go())


def post(url: str, ts: int, user: str, kind: str) -> int:
    return http("POST", f"{url}/analytics?timestamp={ts}&user={user}&{kind}")[0]


def counts(url: str, ts: int) -> dict[str, int]:
    status, _, body = http("GET", f"{url}/analytics?timestamp={ts}")
    assert status == 200, body
    return parse_counts(body)


def test_many_servers_on_a_cluster_agree_and_spread_the_hour(
    redis_cluster: RedisClusterProcs, cluster_url: str
) -> None:
    servers = [TapadServer(cluster_url).start(), TapadServer(cluster_url).start()]
    try:
        events = [
            (
                PAST_MS if i % 20 == 0 else NOW_MS,
                f"user-{i % 240}",
                "click" if i % 3 else "impression",
            )
            for i in range(900)
        ]
        with ThreadPoolExecutor(8) as pool:
            codes = list(
                pool.map(lambda ie: post(servers[ie[0] % 2].url, *ie[1]), enumerate(events))
            )
        assert codes == [200] * len(events)

        for ts in (NOW_MS, PAST_MS):
            mine = [e for e in events if e[0] == ts]
            kinds = Counter(kind for _, _, kind in mine)
            truth = {
                "unique_users": len({user for _, user, _ in mine}),
                "clicks": kinds["click"],
                "impressions": kinds["impression"],
            }
            for server in servers:
                assert counts(server.url, ts) == truth
    finally:
        for server in servers:
            server.stop()

    # A shard per master: each master holds one shard of the hour (its users, their sketch
    # and counts).
    per_node = redis_cluster.keys_per_node(hour_keys(HOUR))
    assert [len(keys) for keys in per_node] == [3] * SHARDS, per_node
    tags = {key.split("}")[0] for keys in per_node for key in keys}
    assert len(tags) == SHARDS, per_node  # three shards, not one shard's keys split
    # The layout was written once, at first start, with the shards' hash tags.
    layout = redis_cluster.nodes[0].cli("-c", "--raw", "HGETALL", "tapad:layout").split()
    assert layout[:6] == ["shards", "3", "unique", "exact", "retention", "0"]
    assert layout[6] == "tags" and len(layout[7].split(",")) == SHARDS


def test_a_batch_is_one_transaction_per_master(
    redis_cluster: RedisClusterProcs, cluster_url: str
) -> None:
    """A new store's batch, whatever hours and users it holds, is one MULTI/EXEC on each
    master it touches (every hour of a shard shares the shard's slot)."""

    def execs() -> list[int]:
        found = []
        for node in redis_cluster.masters():
            stats = node.cli("INFO", "commandstats")  # no cmdstat_exec line before one EXEC
            calls = stats.split("cmdstat_exec:calls=")[1:]
            found.append(int(calls[0].split(",")[0]) if calls else 0)
        return found

    async def go() -> list[int]:
        store = open_store(cluster_url)
        await store.connect()
        try:
            hours = range(HOUR - 3, HOUR + 1)
            await store.write([Event(h, "warm-up", True) for h in hours])  # hours indexed
            before = execs()
            await store.write([Event(h, f"user{i}", i % 4 == 0) for h in hours for i in range(40)])
            return [after - b for after, b in zip(execs(), before, strict=True)]
        finally:
            await store.close()

    assert asyncio.run(go()) == [1] * SHARDS


def test_a_store_laid_out_before_shard_tags_is_adopted_as_it_is(
    redis_cluster: RedisClusterProcs, cluster_url: str
) -> None:
    """A store created by an earlier tapad (16 shards, no tags: {hour.shard} keys) keeps
    its keys: a server adopts its layout and counts where the earlier servers did."""
    redis_cluster.nodes[0].cli(
        "-c", "HSET", "tapad:layout", "shards", "16", "unique", "exact", "retention", "0"
    )
    server = TapadServer(cluster_url).start()
    try:
        for i in range(100):
            assert post(server.url, NOW_MS, f"user{i % 50}", "click") == 200
        assert counts(server.url, NOW_MS) == {"unique_users": 50, "clicks": 100, "impressions": 0}
    finally:
        server.stop()
    per_node = redis_cluster.keys_per_node(f"tapad:{{{HOUR}.*")
    assert sum(len(keys) for keys in per_node) == 3 * 16  # users, sketch, counts; 16 shards
    assert not any(redis_cluster.keys_per_node(hour_keys(HOUR)))
    layout = redis_cluster.nodes[0].cli("-c", "--raw", "HGETALL", "tapad:layout")
    assert layout.split() == ["shards", "16", "unique", "exact", "retention", "0"]


def test_a_layout_whose_tags_disagree_with_its_shards_is_refused(
    redis_cluster: RedisClusterProcs, cluster_url: str
) -> None:
    """Tags for 2 shards in a layout of 3 (written by hand, or half by an older tapad): a
    server cannot know where a user is counted, so it refuses to start, in one line."""
    redis_cluster.nodes[0].cli(
        "-c", "HSET", "tapad:layout", "shards", "3", "unique", "exact", "retention", "0"
    )
    redis_cluster.nodes[0].cli("-c", "HSET", "tapad:layout", "tags", "s0.0,s1.0")
    refused = TapadServer(cluster_url).start(wait=False)
    assert refused.wait(30) == 2
    lines = refused.log.decode().strip().splitlines()
    assert lines[-1].startswith("error: the store's layout is inconsistent: shards=3 but 2 tags")
    assert "Traceback" not in refused.log.decode()


def test_explicit_shards_on_a_new_store_are_spread_round_robin(
    redis_cluster: RedisClusterProcs, cluster_url: str
) -> None:
    """--shards 7 on three masters: 3, 2 and 2 shards per master, not at random."""
    server = TapadServer(cluster_url, "--shards", "7").start()
    try:
        for i in range(200):
            assert post(server.url, NOW_MS, f"user{i}", "impression") == 200
        assert counts(server.url, NOW_MS)["unique_users"] == 200
    finally:
        server.stop()
    per_node = redis_cluster.keys_per_node(f"tapad:{{*}}:{HOUR}:u")
    assert sorted(len(keys) for keys in per_node) == [2, 2, 3], per_node


def test_read_hours_sums_each_hour_over_every_master(cluster_url: str) -> None:
    """Several hours in one call: each hour's shards summed, whichever master holds them."""

    async def main() -> list[HourCounts]:
        store = open_store(cluster_url)
        await store.connect()
        try:
            await store.write(
                [Event(h, f"user-{i}", i % 3 > 0) for h in (7, 9) for i in range(h * 10)]
            )
            return await store.read_hours([9, 8, 7])
        finally:
            await store.close()

    nine, eight, seven = asyncio.run(main())
    assert (nine.unique_users, nine.clicks, nine.impressions) == (90, 60, 30)
    assert (eight.unique_users, eight.clicks, eight.impressions) == (0, 0, 0)
    assert (seven.unique_users, seven.clicks, seven.impressions) == (70, 46, 24)


@pytest.mark.timeout(120)  # two servers started on the cluster
def test_a_server_with_another_layout_refuses_to_start(cluster_url: str) -> None:
    TapadServer(cluster_url, "--shards", "8").start().stop()
    adopted = TapadServer(cluster_url).start()  # no explicit values: adopts shards=8
    try:
        post(adopted.url, NOW_MS, "someone", "click")
        assert counts(adopted.url, NOW_MS)["clicks"] == 1
    finally:
        adopted.stop()
    adopted_log = adopted.log.decode()
    assert "unique users: exact" in adopted_log

    for extra in (("--shards", "16"), ("--unique", "hll")):
        refused = TapadServer(cluster_url, *extra).start(wait=False)
        assert refused.wait(30) == 2
        lines = refused.log.decode().strip().splitlines()
        assert lines[-1].startswith("error: the store was set up with shards=8 unique=exact")
        assert "Traceback" not in refused.log.decode()


def test_a_bad_cluster_url_is_one_line(tmp_path: Path) -> None:
    server = TapadServer("redis+cluster://127.0.0.1", cwd=tmp_path).start(wait=False)
    assert server.wait(30) == 2
    out = server.log.decode().strip().splitlines()
    assert out == [
        "error: store URL 'redis+cluster://127.0.0.1': each node must be host:port, got '127.0.0.1'"
    ]


def test_a_server_starts_before_its_cluster_and_serves_once_it_is_up(tmp_path: Path) -> None:
    cluster = RedisClusterProcs(tmp_path / "late")  # ports chosen, nothing started yet
    server = TapadServer(cluster.url, "--store-timeout", "0.5").start()
    try:
        assert http("GET", f"{server.url}/healthz")[0] == 503
        status, headers, _ = http("POST", f"{server.url}/analytics?timestamp={NOW_MS}&user=a&click")
        assert status == 503 and "Retry-After" in headers
        cluster.start()
        wait_until(
            lambda: http("GET", f"{server.url}/healthz")[0] == 200,
            20,
            interval=0.2,
            what="healthy",
        )
        assert post(server.url, NOW_MS, "a", "click") == 200
        assert counts(server.url, NOW_MS) == {"unique_users": 1, "clicks": 1, "impressions": 0}
    finally:
        server.stop()
        cluster.stop()


def move_slot(cluster: RedisClusterProcs, slot: int) -> None:
    """Migrate one slot, keys and all, to another master, as a resharding would."""
    ids = {n.port: n.cli("CLUSTER", "MYID") for n in cluster.nodes}
    owner = next(
        n for n in cluster.nodes if int(n.cli("CLUSTER", "COUNTKEYSINSLOT", str(slot))) > 0
    )
    target = next(n for n in cluster.nodes if n is not owner)
    target.cli("CLUSTER", "SETSLOT", str(slot), "IMPORTING", ids[owner.port])
    owner.cli("CLUSTER", "SETSLOT", str(slot), "MIGRATING", ids[target.port])
    for key in owner.cli("--raw", "CLUSTER", "GETKEYSINSLOT", str(slot), "100").split():
        owner.cli("MIGRATE", "127.0.0.1", str(target.port), key, "0", "5000")
    for node in cluster.nodes:
        node.cli("CLUSTER", "SETSLOT", str(slot), "NODE", ids[target.port])


def test_a_slot_that_moves_under_a_running_server_loses_nothing(
    redis_cluster: RedisClusterProcs, cluster_url: str
) -> None:
    server = TapadServer(cluster_url).start()
    layout = stored_layout(cluster_url)
    slot = key_slot(layout.users_key(HOUR, layout.shard_of("alice")).encode())
    try:
        assert post(server.url, NOW_MS, "alice", "click") == 200  # the server knows the map
        move_slot(redis_cluster, slot)
        redis_cluster.wait_ok()
        # Its cached slot map is now wrong for alice's shard: MOVED, reload, send again.
        assert post(server.url, NOW_MS, "alice", "impression") == 200
        assert post(server.url, NOW_MS, "bob", "click") == 200
        assert counts(server.url, NOW_MS) == {"unique_users": 2, "clicks": 2, "impressions": 1}
    finally:
        server.stop()
        move_slot(redis_cluster, slot)  # leave the session cluster as spread as it was


def replication_lag(cluster: RedisClusterProcs) -> list[str]:
    """What each master has that a replica of it has not acknowledged yet (empty: none).

    A replica acknowledges its offset once a second, and its first sync starts only after
    ``repl-diskless-sync-delay`` (5 s by default), so this is waited for, never assumed."""
    behind = []
    for master in cluster.masters():
        info = master.cli("INFO", "replication")
        offset = int(info.split("master_repl_offset:")[1].split()[0])
        replicas = [line for line in info.splitlines() if line.startswith("slave")]
        if not replicas:
            behind.append(f"master :{master.port} has no replica yet")
        behind += [
            f"master :{master.port} at {offset}, {line}"
            for line in replicas
            if "state=online" not in line or f"offset={offset}," not in line
        ]
    return behind


def wait_replicated(cluster: RedisClusterProcs, timeout: float = 60) -> None:
    """Until every replica has every write its master has (replication is asynchronous)."""
    try:
        wait_until(lambda: not replication_lag(cluster), timeout=timeout, interval=0.1)
    except TimeoutError:
        raise TimeoutError(f"replicas did not catch up: {replication_lag(cluster)}") from None


def test_a_master_dies_and_its_replica_takes_over(tmp_path: Path) -> None:

    cluster = RedisClusterProcs(tmp_path / "ha", masters=3, replicas=1)
    server = None
    try:
        cluster.start()
        server = TapadServer(cluster.url, "--store-timeout", "0.5").start()
        truth: Counter[str] = Counter()
        for i in range(60):
            user = f"before{i % 30}"
            assert post(server.url, NOW_MS, user, "click") == 200
            truth[user] += 1
        wait_replicated(cluster)

        layout = stored_layout(cluster.url)
        slot = key_slot(layout.users_key(HOUR, layout.shard_of("before0")).encode())
        (victim,) = [
            n for n in cluster.masters() if n.cli("CLUSTER", "COUNTKEYSINSLOT", str(slot)) != "0"
        ]
        assert victim.proc is not None
        victim.proc.kill()
        victim.proc.wait()
        victim.proc = None

        # While its replica takes over, POSTs may get 503 (and then are not recorded);
        # afterwards every POST, to any shard, is recorded again.
        deadline = time.monotonic() + 60
        acked = 0
        i = 0
        while acked < 60:
            assert time.monotonic() < deadline, "the cluster never served again"
            user = f"after{i % 30}"
            status, headers, _ = http(
                "POST", f"{server.url}/analytics?timestamp={NOW_MS}&user={user}&click"
            )
            if status == 200:
                truth[user] += 1
                acked += 1
                i += 1
            else:
                assert status == 503 and "Retry-After" in headers
                time.sleep(0.2)  # a client's back-off after a 503, as Retry-After asks
        assert counts(server.url, NOW_MS) == {
            "unique_users": len(truth),
            "clicks": sum(truth.values()),
            "impressions": 0,
        }
    finally:
        if server is not None:
            server.stop()
        cluster.stop()


def test_a_batch_for_a_master_that_is_down_records_nothing_anywhere(tmp_path: Path) -> None:
    """A batch spans masters; with one of them refusing connections, none of it is written
    (each POST of it gets 503 and may be retried without counting anything twice)."""
    cluster = RedisClusterProcs(tmp_path / "down").start()
    try:

        async def go() -> None:
            store = open_store(cluster.url, StoreOptions(timeout=1.0))
            try:
                await store.connect()
                await store.write([Event(HOUR - 1, "warm-up", True)])  # links to every master
                victim = cluster.nodes[1]
                assert victim.proc is not None
                victim.proc.kill()
                victim.proc.wait()
                victim.proc = None
                batch = [Event(HOUR, f"user{i}", i % 2 == 0) for i in range(200)]
                with pytest.raises(StoreError):
                    await store.write(batch)
            finally:
                await store.close()

        asyncio.run(go())
        for node in cluster.nodes:
            if node.proc is not None:
                assert node.cli("KEYS", hour_keys(HOUR)) == "", "half a batch was written"
    finally:
        cluster.stop()


def clicks_per_shard(nodes: list[RedisServer]) -> dict[int, int]:
    """The clicks of this hour that ``nodes`` hold, by shard (tapad:{s<shard>.n}:hour:n)."""
    held: dict[int, int] = {}
    for node in nodes:
        for key in node.cli("KEYS", f"tapad:{{*}}:{HOUR}:n").split():
            held[int(key.split("{s")[1].split(".")[0])] = int(node.cli("HGET", key, "c") or 0)
    return held


SHARD_OF = KeyLayout("tapad:", SHARDS, None, default_shards=SHARDS).shard_of


def test_a_master_that_hangs_mid_batch_fails_only_its_own_posts(tmp_path: Path) -> None:
    """A batch spans masters and one of them stops answering while its part is in flight:
    the other masters' parts are committed, the stopped master's part stays in doubt past
    the commit deadline, and the committer tells each POST which (200 or 504), instead of
    503 for all and double counts on retry. Its other masters' links stay open."""
    cluster = RedisClusterProcs(tmp_path / "hang").start()
    victim = cluster.nodes[1]
    assert victim.proc is not None
    others = [node for node in cluster.nodes if node is not victim]
    try:

        async def go() -> list[tuple[Event, PartialWrite | int | None]]:
            store = open_store(cluster.url, StoreOptions(timeout=1.0, commit_deadline=2.0))
            assert isinstance(store, ClusterStore)
            await store.connect()
            committer = GroupCommitter(store)
            committer.start()
            try:
                # Impressions for this hour from 64 users: a link to every master, and the
                # hour already indexed, so the batch below goes straight to the masters.
                await asyncio.gather(
                    *(committer.submit(Event(HOUR, f"warm-up{i}", False)) for i in range(64))
                )
                links = {addr: node.ready() for addr, node in store._nodes.items()}
                os.kill(victim.pid, signal.SIGSTOP)
                batch = [Event(HOUR, f"user{i}", True) for i in range(200)]
                outcomes = await asyncio.gather(*(committer.submit(e) for e in batch))
                assert (store.in_doubt.applied, store.in_doubt.unknown) == (0, 1)
                kept = [a for a, link in links.items() if store._nodes[a].ready() is link]
                assert len(kept) == len(links) - 1  # only the stopped master's link closed
                return list(zip(batch, outcomes, strict=True))
            finally:
                os.kill(victim.pid, signal.SIGCONT)
                await committer.drain()
                await store.close()

        answered = asyncio.run(go())
        cluster.wait_ok()  # a master stopped past cluster-node-timeout took the cluster down
        held = clicks_per_shard(others)  # what the masters that kept answering hold
        assert 0 < len(held) < SHARDS  # the batch did span the stopped master and others
        for event, outcome in answered:
            assert isinstance(outcome, PartialWrite)  # one batch, applied in part
            assert outcome.committed(event) == (SHARD_OF(event.user) in held), event
            assert outcome.in_doubt(event) == (SHARD_OF(event.user) not in held), event
        acknowledged = sum(
            1
            for event, outcome in answered
            if isinstance(outcome, PartialWrite) and outcome.committed(event)
        )
        assert 0 < acknowledged < len(answered)
        assert sum(held.values()) == acknowledged  # every 200 stored, nothing else there
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim.pid, signal.SIGCONT)
        cluster.stop()


@pytest.mark.timeout(240)  # its own cluster, a master stopped past its node timeout
def test_over_http_only_posts_whose_part_is_in_doubt_get_504(tmp_path: Path) -> None:
    """The same wired through the HTTP handler: whichever way the POSTs fall into batches,
    every 200 is stored on a master that kept answering, nothing else is stored there, and
    the POSTs for the stopped master's shards get 504 (in doubt past the deadline), not
    200 and not a 503 that would be retried while Redis may still apply it."""
    cluster = RedisClusterProcs(tmp_path / "hang-http").start()
    victim = cluster.nodes[1]
    assert victim.proc is not None
    server = TapadServer(cluster.url, "--store-timeout", "1").start()
    try:
        with ThreadPoolExecutor(16) as pool:
            warm = [f"w{i}" for i in range(64)]
            assert (
                list(pool.map(lambda u: post(server.url, NOW_MS, u, "impression"), warm))
                == [200] * 64
            )
            os.kill(victim.pid, signal.SIGSTOP)
            users = [f"user{i}" for i in range(200)]
            codes = list(pool.map(lambda u: post(server.url, NOW_MS, u, "click"), users))
        os.kill(victim.pid, signal.SIGCONT)
        assert set(codes) <= {200, 503, 504} and 504 in codes
        cluster.wait_ok()  # a master stopped past cluster-node-timeout took the cluster down
        held = clicks_per_shard([node for node in cluster.nodes if node is not victim])
        acked = Counter(SHARD_OF(u) for u, code in zip(users, codes, strict=True) if code == 200)
        assert all(shard in held for shard in acked)  # no 200 for the stopped master's part
        assert {s: n for s, n in held.items() if n} == dict(acked)  # every 200 stored, no more
        doubt = {SHARD_OF(u) for u, code in zip(users, codes, strict=True) if code == 504}
        assert not doubt & set(held)  # 504 only for the stopped master's part
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim.pid, signal.SIGCONT)
        server.stop()
        cluster.stop()


def test_connecting_to_a_stalled_master_does_not_hold_up_the_others(tmp_path: Path) -> None:
    """Links are opened per master: a write whose master is stalled (its connect hangs)
    does not keep a write to another master waiting, and fails on its own."""
    cluster = RedisClusterProcs(tmp_path / "stall").start()
    victim = cluster.nodes[1]
    assert victim.proc is not None
    layout = stored_layout(cluster.url)

    def master_of(user: str) -> int:
        slot = key_slot(layout.users_key(HOUR, layout.shard_of(user)).encode())
        (owner,) = [n.port for n in cluster.nodes if owns(n, slot)]
        return owner

    def owns(node: RedisServer, slot: int) -> bool:
        for line in node.cli("CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "myself" in fields[2]:
                for span in fields[8:]:
                    first, _, last = span.partition("-")
                    if first.isdigit() and int(first) <= slot <= int(last or first):
                        return True
        return False

    users = [f"user{i}" for i in range(200)]
    stalled = next(u for u in users if master_of(u) == victim.port)
    healthy = next(u for u in users if master_of(u) != victim.port)

    async def go() -> None:
        store = open_store(cluster.url, StoreOptions(timeout=1.0, commit_deadline=2.0))
        assert isinstance(store, ClusterStore)
        try:
            await store.connect()
            await store.write([Event(HOUR, "warm-up", True)])  # the hour is indexed
            for node in store._nodes.values():
                node.close()  # every link must be opened again
            os.kill(victim.pid, signal.SIGSTOP)
            slow = asyncio.ensure_future(store.write([Event(HOUR, stalled, True)]))
            await asyncio.sleep(0)  # its connect has started
            fast = asyncio.ensure_future(store.write([Event(HOUR, healthy, True)]))
            done, _ = await asyncio.wait({slow, fast}, return_when=asyncio.FIRST_COMPLETED)
            assert done == {fast} and fast.exception() is None
            with pytest.raises(StoreError):
                await slow  # never sent: its master did not answer the connect
        finally:
            os.kill(victim.pid, signal.SIGCONT)
            await store.close()

    try:
        asyncio.run(go())
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim.pid, signal.SIGCONT)
        cluster.stop()


def test_an_error_inside_exec_on_one_master_is_a_store_fault(
    redis_cluster: RedisClusterProcs, cluster_url: str
) -> None:
    """WRONGTYPE inside one slot's EXEC: that part is applied in part (in doubt: 504), the
    other parts are applied (200); then the store refuses every write unsent and fails
    ping (/healthz 503)."""
    bad = SHARD_OF("bad-user")
    bad_key = stored_layout(cluster_url).users_key(HOUR, bad)
    redis_cluster.nodes[0].cli("-c", "SET", bad_key, "not a set")
    users = ["bad-user", *(f"user{i}" for i in range(100))]

    async def go() -> None:
        store = open_store(cluster_url)
        assert isinstance(store, ClusterStore)
        try:
            await store.connect()
            batch = [Event(HOUR, user, True) for user in users]
            with pytest.raises(PartialWrite) as partial:
                await store.write(batch)
            for event in batch:
                faulty = SHARD_OF(event.user) == bad
                assert partial.value.in_doubt(event) == faulty, event
                assert partial.value.committed(event) == (not faulty), event
            with pytest.raises(StoreError, match="misconfigured"):
                await store.write([Event(HOUR + 1, "later", True)])
            with pytest.raises(StoreError, match="misconfigured"):
                await store.ping()
        finally:
            await store.close()

    asyncio.run(go())
    held = clicks_per_shard(redis_cluster.masters())
    good = Counter(SHARD_OF(u) for u in users if SHARD_OF(u) != bad)
    assert {s: n for s, n in held.items() if s != bad} == dict(good)  # every 200 stored
    assert held[bad] == sum(1 for u in users if SHARD_OF(u) == bad)  # counted, user not added
    assert not any(redis_cluster.keys_per_node(hour_keys(HOUR + 1)))  # refused unsent


def test_one_master_switched_to_eviction_makes_healthz_503(
    redis_cluster: RedisClusterProcs, cluster_url: str
) -> None:
    """Every master is checked, not only the one the URL names first."""
    from tests.support import InProcessTapad

    last = redis_cluster.masters()[-1]
    server = InProcessTapad(cluster_url, store_check_every=0.2).start()
    try:
        assert http("GET", f"{server.url}/healthz")[0] == 200
        last.cli("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
        wait_until(
            lambda: http("GET", f"{server.url}/healthz")[::2] == (503, "store evicting events\n"),
            what="/healthz 503 for one evicting master",
        )
        last.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
        wait_until(lambda: http("GET", f"{server.url}/healthz")[0] == 200, what="/healthz 200")
    finally:
        last.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
        server.stop()
