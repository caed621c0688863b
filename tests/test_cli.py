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


COMMANDS = [
    (), ("serve",), ("usernames",), ("usernames", "fetch"), ("usernames", "generate"),
    ("loadgen",), ("loadgen", "post"), ("loadgen", "get"), ("tally",), ("export",),
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "tapad")
def test_dash_h_is_help_everywhere_and_reads_plainly(command: tuple[str, ...]) -> None:
    short, long = tapad(*command, "-h"), tapad(*command, "--help")
    assert short.returncode == 0 == long.returncode, short.stderr
    assert short.stdout == long.stdout and "Usage:" in short.stdout
    assert "-h, --help" in short.stdout
    assert "<bool>" not in short.stdout, short.stdout  # a flag takes no value


def test_serve_help_shows_the_store_url_forms_whole() -> None:
    out = " ".join(tapad("serve", "--help").stdout.split())
    assert "redis://[user:password@]host:port/db" in out, out


def test_a_write_error_is_a_user_error_exit_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = tapad("usernames", "generate", "--count", "3", "--out", str(tmp_path))  # a folder
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


def test_tally_help_says_what_exit_1_means() -> None:
    out = " ".join(tapad("tally", "--help").stdout.lower().split())
    assert "exit 1" in out and "exit 2" in out, out
