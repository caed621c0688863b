from __future__ import annotations

import re
from pathlib import Path

import pytest

from tapad.usernames.generate import generate_usernames
from tests.loadgen.cli import assert_one_line_error, tapad

NAME = re.compile(r"[a-z]+([._]?[a-z]+)?\d*|[a-z]+_\d{4}")


def test_same_seed_same_names_other_seed_other_names() -> None:
    first = generate_usernames(500, seed=7)
    assert generate_usernames(500, seed=7) == first
    assert generate_usernames(500, seed=8) != first
    assert generate_usernames(100, seed=7) == first[:100]  # a prefix: more names, same start


@pytest.mark.parametrize("count", [1, 1000, 50_000])
def test_names_are_distinct_and_look_like_user_names(count: int) -> None:
    names = generate_usernames(count, seed=1)
    assert len(names) == count == len(set(names))
    assert all(NAME.fullmatch(name) for name in names), [n for n in names if not NAME.fullmatch(n)]
    assert len({len(name) for name in names}) > (1 if count > 100 else 0)


def test_cli_writes_the_file_and_stdout(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "names.txt"
    result = tapad("usernames", "generate", "--count", "300", "--seed", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text().splitlines() == generate_usernames(300, seed=3)
    piped = tapad("usernames", "generate", "--count", "5", "--seed", "3", "--out", "-")
    assert piped.stdout.splitlines() == generate_usernames(5, seed=3)


def test_too_many_names_is_one_line(tmp_path: Path) -> None:
    result = tapad("usernames", "generate", "--count", "99000000", "--out", str(tmp_path / "n"))
    assert_one_line_error(result, "at most")
