from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import InProcessTapad, RedisClusterProcs, RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session, on a free port in a temp folder."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session Redis, emptied for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/tapad.db"


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store in turn, fresh for this test."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tapad.db"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
def tapad_server(store_url: str) -> Iterator[InProcessTapad]:
    """A real tapad server on each store, in this process (tests that need a process start
    ``TapadServer`` themselves)."""
    server = InProcessTapad(store_url).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcs]:
    """A real three-master Redis Cluster for the session."""
    cluster = RedisClusterProcs(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: RedisClusterProcs) -> str:
    """The session Redis Cluster, emptied for this test."""
    redis_cluster.flush()
    url: str = redis_cluster.url
    return url
