"""The fetcher against real HTTP sources on 127.0.0.1 (never the default internet URL)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tapad.usernames.fetch import DEFAULT_URL, FetchError, fetch_usernames
from tests.loadgen.cli import assert_one_line_error, assert_plain, tapad
from tests.support import free_port
from tests.usernames.source import NameSource

Plan = Callable[[int], str | int]  # n-th request -> its answer (see NameSource)


@pytest.mark.parametrize("shape", ["json", "text"])
def test_fetches_distinct_names_from_either_shape(shape: str) -> None:
    with NameSource(shape=shape, per_page=7) as source:
        names, stats = fetch_usernames(source.url, 50, threads=3)
    assert len(names) == 50
    assert len(set(names)) == 50
    assert all(name.startswith("user") for name in names)
    assert stats.failures == 0
    assert source.count >= 50 // 7 + 1


def test_pool_really_runs_requests_in_parallel() -> None:
    # The source holds every answer until four requests are in flight at once (or 2 s
    # pass): a pool that sent one request at a time would peak at one.
    with NameSource(per_page=5, hold_until=4) as source:
        names, _ = fetch_usernames(source.url, 40, threads=4)
    assert len(set(names)) == 40
    assert source.max_in_flight == 4


def test_overlapping_pages_never_give_duplicates() -> None:
    # Each page repeats half of the previous one, as a random source sometimes does.
    with NameSource(per_page=10, names=lambda n: [f"u{n * 5 + i}" for i in range(10)]) as source:
        names, _ = fetch_usernames(source.url, 60, threads=4)
    assert len(names) == 60 == len(set(names))


def test_server_errors_and_throttling_are_retried() -> None:
    plan = {0: 500, 1: 503, 2: 429, 4: 502}
    with NameSource(per_page=10, plan=lambda n: plan.get(n, "ok")) as source:
        names, stats = fetch_usernames(source.url, 40, threads=2, backoff=0.01)
    assert len(set(names)) == 40
    assert stats.failures == 4


def test_slow_answers_time_out_and_are_retried() -> None:
    slow = NameSource(per_page=10, plan=lambda n: "slow" if n < 2 else "ok", slow_seconds=4)
    with slow as source:
        names, stats = fetch_usernames(source.url, 30, threads=2, timeout=1.0, backoff=0.01)
    assert len(set(names)) == 30
    assert stats.failures == 2


def test_a_source_failing_every_time_stops_after_a_bounded_run() -> None:
    with NameSource(plan=lambda n: 500) as source, pytest.raises(FetchError) as caught:
        fetch_usernames(source.url, 10, threads=3, max_failures=6, backoff=0.01)
    assert "6 requests in a row failed" in str(caught.value)
    assert "HTTP 500" in str(caught.value)
    assert 6 <= source.count <= 6 + 3  # threads in flight when it gave up may finish


def test_a_dead_address_ends_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "names.txt"
    result = tapad(
        "usernames", "fetch", "--url", f"http://127.0.0.1:{free_port()}/", "--count", "5",
        "--out", str(out), "--threads", "2", "--max-failures", "4",
    )  # fmt: skip
    assert_one_line_error(result, "cannot connect")
    assert not out.exists()


def test_a_source_that_repeats_itself_stops_and_keeps_what_it_got(tmp_path: Path) -> None:
    out = tmp_path / "names.txt"
    with NameSource(shape="text", names=lambda n: ["ann", "bob", "cid"]) as source:
        result = tapad("usernames", "fetch", "--url", source.url, "--count", "10",
                       "--out", str(out), "--threads", "2")  # fmt: skip
    assert_one_line_error(result, "repeating itself", "3 names saved")
    assert out.read_text().split() == ["ann", "bob", "cid"]


@pytest.mark.parametrize(("shape", "plan", "words"), [
    ("html", lambda n: "ok", ("HTML",)),
    ("json", lambda n: 404, ("HTTP 404",)),
])  # fmt: skip
def test_answers_that_will_never_be_names_stop_at_once(
    shape: str, plan: Plan, words: tuple[str, ...], tmp_path: Path
) -> None:
    with NameSource(shape=shape, plan=plan) as source:
        result = tapad("usernames", "fetch", "--url", source.url, "--count", "5",
                       "--out", str(tmp_path / "n.txt"))  # fmt: skip
        assert source.count <= 8  # one per thread at most, no retries
    assert_one_line_error(result, *words)


def test_cli_merges_with_the_existing_file_in_stable_order(tmp_path: Path) -> None:
    out = tmp_path / "names.txt"
    out.write_text("alice\nuser0_1\n\nbob\n")
    with NameSource(shape="text", per_page=4) as source:
        result = tapad("usernames", "fetch", "--url", source.url, "--count", "12",
                       "--out", str(out), "--threads", "1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert_plain(result.stdout + result.stderr)
    names = out.read_text().splitlines()
    assert names[:3] == ["alice", "user0_1", "bob"]
    assert len(names) == 12 == len(set(names))
    assert "12 names" in result.stdout
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed, not left behind


def test_a_full_file_needs_no_request(tmp_path: Path) -> None:
    out = tmp_path / "names.txt"
    out.write_text("".join(f"n{i}\n" for i in range(5)))
    # The default URL would need the internet: it must not be contacted when nothing is missing.
    result = tapad("usernames", "fetch", "--count", "5", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "0 new, 0 requests" in result.stdout
    assert DEFAULT_URL.startswith("https://randomuser.me/")


@pytest.mark.parametrize("url", ["randomuser.me/api", "ftp://127.0.0.1/x", "http://"])
def test_bad_urls_are_one_line(url: str, tmp_path: Path) -> None:
    result = tapad("usernames", "fetch", "--url", url, "--out", str(tmp_path / "n.txt"))
    assert_one_line_error(result, "--url")
