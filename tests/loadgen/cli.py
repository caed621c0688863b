"""Run ``python -m tapad`` as a user would, with output going to pipes (not a terminal)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def tapad(
    *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tapad", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """A user error: non-zero exit, exactly one line on stderr, no traceback, names the cause."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in lines[0], lines[0]


def assert_plain(text: str) -> None:
    """Output meant for a pipe carries no terminal escape codes."""
    assert "\x1b[" not in text, repr(text[:200])
