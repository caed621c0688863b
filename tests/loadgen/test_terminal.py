"""On a terminal: live progress and colour; the same run in a pipe shows neither (see the
other tests' ``assert_plain``)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest

from tests.support import InProcessTapad


def run_on_a_terminal(*args: str, timeout: float = 60) -> str:
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapad", *args], stdin=follower, stdout=follower,
        stderr=follower, env=env,
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is done with it
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout) == 0
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_post_on_a_terminal_shows_live_progress(tapad_server: InProcessTapad) -> None:
    # 1,000 requests paced at 2,000/s take half a second: time for a few progress updates.
    out = run_on_a_terminal("loadgen", "post", "--url", tapad_server.url, "-n", "1000",
                            "--rate", "2000", "-c", "4")  # fmt: skip
    assert "/1,000" in out  # the live "done/total" line
    assert "req/s" in out and "latency histogram" in out
    assert "\x1b[" in out  # colour and cursor codes, which a pipe never gets
