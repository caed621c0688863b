"""The command line as a user meets it: help, version, and one-line usage errors."""

from __future__ import annotations

import subprocess
import sys

import pytest


def tapad(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tapad", *args], capture_output=True, text=True, timeout=30
    )


def test_help_lists_every_command() -> None:
    result = tapad("--help")
    assert result.returncode == 0
    for command in ("serve", "usernames", "loadgen", "tally"):
        assert command in result.stdout
    for sub, commands in (("usernames", ("fetch", "generate")), ("loadgen", ("post", "get"))):
        out = tapad(sub, "--help").stdout
        assert all(c in out for c in commands)


def test_version() -> None:
    result = tapad("--version")
    assert result.returncode == 0 and result.stdout.startswith("tapad ")


@pytest.mark.parametrize(
    "args",
    [
        ("serve", "--port", "eighty"),
        ("serve", "--bogus"),
        ("loadgen", "post", "-n", "many"),
        ("usernames", "generate", "--count", "-5"),
        ("nope",),
    ],
)
def test_usage_errors_are_one_line(args: tuple[str, ...]) -> None:
    result = tapad(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "╭" not in result.stderr
