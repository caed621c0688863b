"""Events from web pages of other origins, in a real headless Chromium: the pixel, /tapad.js
(sendBeacon, its fetch fallback, the page being left) and CORS as the browser enforces it.

One browser and two static sites for the module: ``site`` (allowed by ``--cors-origins``) and
``other`` (not), each on a port of its own, so each is an origin other than tapad's. Each test
gets a fresh tapad and counts what it recorded since the test began.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import InProcessTapad, wait_until

pytest.importorskip("selenium", reason="pip install -e '.[test]'")
from selenium import webdriver

from tests.browser import StaticSite, chromium

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    chrome = chromium(tmp_path_factory.mktemp("profile"))
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticSite]:
    static = StaticSite(tmp_path_factory.mktemp("site")).start()
    yield static
    static.stop()


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticSite]:
    static = StaticSite(tmp_path_factory.mktemp("other")).start()
    yield static
    static.stop()


class Tapad:
    """A fresh tapad allowing ``site``'s origin, and what it counted since it started."""

    def __init__(self, store_url: str, origin: str) -> None:
        self.server = InProcessTapad(store_url, cors_origins=origin).start()
        self.url = self.server.url
        self.since = time.time_ns() // 1_000_000

    def totals(self) -> dict[str, int]:
        """Clicks and impressions of every hour since the start (an hour may end meanwhile)."""
        now = time.time_ns() // 1_000_000
        answer = httpx.get(f"{self.url}/analytics/hours", params={"from": self.since, "to": now})
        assert answer.status_code == 200, answer.text
        hours = answer.json()["hours"]
        return {k: sum(h[k] for h in hours) for k in ("clicks", "impressions")}

    def reaches(self, clicks: int, impressions: int) -> dict[str, int]:
        expected = {"clicks": clicks, "impressions": impressions}
        wait_until(lambda: self.totals() == expected, what=f"counts {expected}")
        return expected

    def preflights(self) -> int:
        text = httpx.get(f"{self.url}/metrics").text
        found = re.search(r'_count\{method="OPTIONS",status="204"\} (\d+)', text)
        return int(float(found[1])) if found else 0


@pytest.fixture
def tapad(sqlite_url: str, site: StaticSite, driver: webdriver.Chrome) -> Iterator[Tapad]:
    server = Tapad(sqlite_url, site.origin)
    yield server
    driver.get("about:blank")  # leave the page before its server goes
    server.server.stop()


def script_page(tapad: Tapad, before: str = "") -> str:
    """A page loading /tapad.js with a write key, after ``before`` (a script of the test's)."""
    return (
        f"<!doctype html><title>shop</title><script>{before}</script>"
        f'<script src="{tapad.url}/tapad.js" data-key="wk-page" defer></script>'
    )


def open_page(driver: webdriver.Chrome, url: str) -> None:
    driver.get(url)
    wait_until(lambda: driver.execute_script("return !!window.tapad"), what="tapad.js loaded")


def run_async(driver: webdriver.Chrome, script: str) -> Any:
    """``script`` with ``done(value)`` to call once; its value."""
    return driver.execute_async_script(f"const done = arguments[arguments.length - 1];\n{script}")


def test_pixels_from_any_origin_are_recorded(
    driver: webdriver.Chrome, tapad: Tapad, site: StaticSite, other: StaticSite
) -> None:
    imgs = "".join(
        f'<img src="{tapad.url}/analytics/pixel.gif?user=u{i}&{kind}&key=wk-page&id=px-{i}">'
        for i, kind in enumerate(["impression"] * 3 + ["click"] * 2)
    )
    driver.get(site.page("creative.html", f"<!doctype html><body>{imgs}"))
    loaded = wait_until(
        lambda: driver.execute_script(
            "const all = [...document.images];"
            "return all.every(i => i.complete) && all.map(i => [i.naturalWidth, i.naturalHeight]);"
        ),
        what="every pixel loaded",
    )
    assert loaded == [[1, 1]] * 5  # a 1x1 image: the GIF decoded
    tapad.reaches(clicks=2, impressions=3)
    # an origin left out of --cors-origins: an image needs no CORS, so it counts all the same
    driver.get(other.page("creative.html", f"<!doctype html><body>{imgs[: imgs.index('>') + 1]}"))
    wait_until(lambda: driver.execute_script("return document.images[0].complete"))
    tapad.reaches(clicks=2, impressions=3)  # the same id: not counted again
    driver.get(other.page("new.html", f'<img src="{tapad.url}/analytics/pixel.gif?user=n&click">'))
    tapad.reaches(clicks=3, impressions=3)


def test_tapad_js_counts_every_event_even_as_the_page_is_left(
    driver: webdriver.Chrome, tapad: Tapad, site: StaticSite
) -> None:
    open_page(driver, site.page("shop.html", script_page(tapad)))
    driver.execute_script(
        "for (let i = 0; i < 400; i++) tapad.impression('user-' + (i % 40));"
        "for (let i = 0; i < 40; i++) tapad.click('user-' + i);"
    )
    driver.get("about:blank")  # at once: what is queued goes out on pagehide
    tapad.reaches(clicks=40, impressions=400)
    assert tapad.preflights() == 0  # a text/plain beacon needs none


def test_tapad_js_splits_large_queues_and_makes_uuids_without_random_uuid(
    driver: webdriver.Chrome, tapad: Tapad, site: StaticSite
) -> None:
    """Every payload under 64 KiB, whatever is queued; ids from getRandomValues where
    crypto.randomUUID is missing (plain-http pages). sendBeacon is watched, not replaced:
    the recorder passes each payload on (without the keepalive quota, so a few hundred
    kilobytes can be in flight at once)."""
    watch = """
        delete Crypto.prototype.randomUUID;
        window.payloads = [];
        Navigator.prototype.sendBeacon = function (url, body) {
            payloads.push({url: url, size: new Blob([body]).size, body: body});
            fetch(url, {method: 'POST', body: body, mode: 'no-cors'});
            return true;
        };
    """
    open_page(driver, site.page("big.html", script_page(tapad, watch)))
    assert driver.execute_script("return typeof crypto.randomUUID") == "undefined"
    payloads = driver.execute_script(
        "for (let i = 0; i < 3000; i++) tapad.impression('someone-with-a-long-name-' + i);"
        "tapad.flush(); return payloads;"
    )
    tapad.reaches(clicks=0, impressions=3000)
    assert len(payloads) >= 3
    # the server is the script's own origin; the write key from data-key, as key=
    assert {p["url"] for p in payloads} == {f"{tapad.url}/analytics/batch?key=wk-page"}
    assert all(p["size"] < 64 * 1024 for p in payloads), [p["size"] for p in payloads]
    ids = [line.split('"id":"')[1][:36] for p in payloads for line in p["body"].splitlines()]
    assert len(ids) == len(set(ids)) == 3000
    assert all(UUID4.match(i) for i in ids), ids[:3]


@pytest.mark.parametrize(
    "beacon",
    [
        "Navigator.prototype.sendBeacon = function () { return false; };",  # refused
        "delete Navigator.prototype.sendBeacon;",  # missing
    ],
)
def test_tapad_js_falls_back_to_fetch_keepalive(
    driver: webdriver.Chrome, tapad: Tapad, site: StaticSite, beacon: str
) -> None:
    open_page(driver, site.page("fallback.html", script_page(tapad, beacon)))
    driver.execute_script("for (let i = 0; i < 50; i++) tapad.click('u' + i);")
    driver.get("about:blank")
    tapad.reaches(clicks=50, impressions=0)


def test_tapad_js_refuses_a_bad_user_at_the_call(
    driver: webdriver.Chrome, tapad: Tapad, site: StaticSite
) -> None:
    """One bad name would make the server refuse the whole batch: the call fails instead."""
    open_page(driver, site.page("bad.html", script_page(tapad)))
    errors = driver.execute_script(
        "const out = [];"
        "for (const u of ['', 'x'.repeat(257), 'a\\nb', 42]) {"
        "  try { tapad.click(u); out.push('taken'); } catch (e) { out.push(e.message); }"
        "}"
        "tapad.click('\\u{1F600}'.repeat(256)); tapad.flush(); return out;"
    )
    assert errors == [
        "tapad: user must be 1 to 256 characters, got 0",
        "tapad: user must be 1 to 256 characters, got 257",
        "tapad: user must not contain control characters",
        "tapad: user must be a string",
    ]
    tapad.reaches(clicks=1, impressions=0)  # 256 emoji: 256 characters, as the server counts


def test_an_allowed_origin_reads_answers_and_sends_preflighted_requests(
    driver: webdriver.Chrome, tapad: Tapad, site: StaticSite
) -> None:
    driver.get(site.page("app.html", "<!doctype html><title>app</title>"))
    answer = run_async(
        driver,
        f"""
        fetch("{tapad.url}/analytics/batch", {{
            method: "POST",
            headers: {{"Content-Type": "application/json"}},  // not simple: a preflight
            body: JSON.stringify([{{user: "a", event: "click", id: "f-1"}},
                                  {{user: "b", event: "impression"}}]),
        }}).then(r => r.json().then(j => done({{status: r.status, json: j}})),
                 e => done({{error: String(e)}}));
        """,
    )
    assert answer == {"status": 200, "json": {"accepted": 2, "duplicates": 0}}
    assert tapad.preflights() == 1
    tapad.reaches(clicks=1, impressions=1)
    again = run_async(
        driver,
        f"""
        fetch("{tapad.url}/analytics?timestamp={tapad.since}&user=a&click&id=f-2", {{
            method: "POST"}}).then(() => fetch("{tapad.url}/analytics?timestamp={tapad.since}"
            + "&user=a&click&id=f-2", {{method: "POST"}}))
          .then(r => done([r.status, r.headers.get("Tapad-Duplicate")]), e => done(String(e)));
        """,
    )
    assert again == [200, "1"]  # an exposed header: the page knows it was a duplicate
    tapad.reaches(clicks=2, impressions=1)


def test_another_origin_reads_nothing_and_sends_no_preflighted_request(
    driver: webdriver.Chrome, tapad: Tapad, other: StaticSite
) -> None:
    open_page(driver, other.page("other.html", script_page(tapad)))
    read = run_async(
        driver,
        f'fetch("{tapad.url}/analytics?timestamp={tapad.since}")'
        ".then(r => done('read ' + r.status), e => done(e.name));",
    )
    assert read == "TypeError"  # the answer came, the page may not see it
    post = run_async(
        driver,
        f"""
        fetch("{tapad.url}/analytics/batch", {{
            method: "POST", headers: {{"Content-Type": "application/json"}},
            body: JSON.stringify([{{user: "a", event: "click"}}]),
        }}).then(r => done("read " + r.status), e => done(e.name));
        """,
    )
    assert post == "TypeError"
    assert tapad.totals() == {"clicks": 0, "impressions": 0}  # the preflight failed: not sent
    # beacons need no CORS: the page's own events still count
    driver.execute_script("tapad.impression('a'); tapad.impression('b'); tapad.click('a');")
    driver.get("about:blank")
    tapad.reaches(clicks=1, impressions=2)
