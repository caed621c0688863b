"""The ``curl`` examples of docs/clients.md, run as written against a real server."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import TapadServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "clients.md"
BLOCKS = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TapadServer]:
    srv = TapadServer(f"sqlite:///{tmp_path_factory.mktemp('docs')}/tapad.db").start()
    yield srv
    srv.stop()


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=[f"sh-{n}" for n in range(len(BLOCKS))])
def test_each_shell_example_runs_as_written(server: TapadServer, block: str) -> None:
    script = block.replace("http://127.0.0.1:8080", server.url)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for expected in re.findall(r"^# (.+)$", block, flags=re.M):  # the output the page shows
        assert expected in done.stdout
