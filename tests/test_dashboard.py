"""The dashboard at ``/`` in a real headless Chromium (Debian's chromium + chromium-driver).

The browser is told never to fetch anything on its own (no updates, no sync, no
background networking) and every request the page makes is read from Chromium's own
network log: all of them must go to the tapad server under test. The screenshot test
draws the page on data from ``tapad loadgen post``; with ``TAPAD_DASHBOARD_PNG=docs/dashboard.png``
it writes the README's picture.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tapad.buckets import MS_PER_HOUR, current_hour
from tests.support import TapadServer, http, wait_until

selenium = pytest.importorskip("selenium", reason="pip install -e '.[test]'")
from selenium.webdriver.common.by import By  # noqa: E402

from tests.browser import chromium  # noqa: E402

NETWORK_SCHEMES = {"http", "https", "ws", "wss", "ftp"}
T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], timeout: float = 30.0) -> T:
    """Poll ``check`` until it gives something truthy; fail naming ``what`` after ``timeout``."""
    return wait_until(check, timeout, interval=0.05, what=what)


class Browser:
    """One headless Chromium with a fresh profile, logging the console and the network."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 1000) -> None:
        self.driver = chromium(profile, width, height, network=True)
        self.requests: list[str] = []
        self.console: list[dict[str, object]] = []

    def collect_logs(self) -> None:
        self.console += self.driver.get_log("browser")  # type: ignore[no-untyped-call]
        for entry in self.driver.get_log("performance"):  # type: ignore[no-untyped-call]
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])

    def metric(self, name: str) -> int | None:
        text = self.driver.find_element(By.CSS_SELECTOR, f'[data-metric="{name}"]').text
        digits = re.sub(r"[^0-9]", "", text)
        return int(digits) if digits else None

    def metrics(self) -> dict[str, int | None]:
        return {n: self.metric(n) for n in ("unique_users", "clicks", "impressions")}

    def points(self) -> int:
        return int(self.driver.find_element(By.ID, "chart").get_attribute("data-points") or 0)

    def quit(self) -> None:
        self.driver.quit()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path / "profile")
    yield b
    b.quit()


@pytest.fixture
def server(sqlite_url: str) -> Iterator[TapadServer]:
    srv = TapadServer(sqlite_url).start()
    yield srv
    srv.stop()


def post(server: TapadServer, ts: int, user: str, kind: str) -> None:
    status, _, body = http("POST", f"{server.url}/analytics?timestamp={ts}&user={user}&{kind}")
    assert status == 200, body


def has_uniques(server: TapadServer) -> bool:
    """Whether this server answers GET /analytics/uniques (the page shows a dash if not)."""
    now = int(time.time() * 1000)
    return http("GET", f"{server.url}/analytics/uniques?from={now}&to={now}")[0] != 404


def console_errors(browser: Browser, server: TapadServer) -> list[dict[str, object]]:
    """SEVERE console entries, but for the 404s of a server without /analytics/uniques
    (Chromium logs every failed fetch; the page shows a dash for those)."""
    browser.collect_logs()
    errors = [e for e in browser.console if e.get("level") == "SEVERE"]
    if not has_uniques(server):
        errors = [e for e in errors if "/analytics/uniques" not in str(e.get("message"))]
    return errors


def test_dashboard_shows_the_current_hour_live_and_the_last_day(
    server: TapadServer, browser: Browser
) -> None:
    now_ms = int(time.time() * 1000)
    hour = current_hour()
    for user, kind in [("ann", "click"), ("bob", "impression"), ("ann", "impression")]:
        post(server, now_ms, user, kind)
    post(server, (hour - 5) * MS_PER_HOUR, "cy", "click")  # in the chart, not in this hour

    browser.driver.get(f"{server.url}/")
    wait_for(
        "the current hour's numbers",
        lambda: browser.metrics() == {"unique_users": 2, "clicks": 1, "impressions": 2},
    )
    ctr = browser.driver.find_element(By.CSS_SELECTOR, '[data-metric="ctr"]').text
    assert ctr.startswith("50"), ctr  # 1 click per 2 impressions
    assert wait_for("24 points in the chart", lambda: browser.points() == 24)
    assert browser.driver.find_elements(By.CSS_SELECTOR, "#chart canvas"), "no chart drawn"
    rows = browser.driver.find_elements(By.CSS_SELECTOR, "#hours tbody tr")
    assert len(rows) == 24
    assert rows[5].find_elements(By.TAG_NAME, "td")[2].text == "1", "hour - 5's click"
    status = browser.driver.find_element(By.ID, "status")
    assert status.get_attribute("data-state") == "ok"
    assert "server answered" in status.text

    # new POSTs show within 3 s (the page reads the current hour every second)
    for i in range(7):
        post(server, int(time.time() * 1000), f"new{i}", "click")
    wait_for(
        "the new POSTs on the page",
        lambda: browser.metrics() == {"unique_users": 9, "clicks": 8, "impressions": 2},
        timeout=3.0,
    )

    for label, points in (("7 days", 168), ("48 h", 48), ("24 h", 24)):
        browser.driver.find_element(By.XPATH, f'//button[text()="{label}"]').click()

        def shows(p: int = points) -> bool:
            return browser.points() == p

        wait_for(f"{points} points after choosing {label}", shows)
        assert len(browser.driver.find_elements(By.CSS_SELECTOR, "#hours tbody tr")) == points

    assert console_errors(browser, server) == []
    assert any(u.startswith(f"{server.url}/static/") for u in browser.requests), (
        "the page's own files are not in the network log: it is not working"
    )
    # chrome:// and data: are the browser's own pages and never touch the network
    network = [u for u in browser.requests if u.split(":", 1)[0] in NETWORK_SCHEMES]
    outside = [u for u in network if not u.startswith(f"{server.url}/")]
    assert outside == [], f"requests leaving tapad: {outside}"
    reads = [u for u in browser.requests if "/analytics?timestamp=" in u]
    assert len(reads) >= 3, "the current hour is not polled"


def test_dashboard_says_when_the_server_stops_answering(
    server: TapadServer, browser: Browser
) -> None:
    browser.driver.get(f"{server.url}/")
    status = browser.driver.find_element(By.ID, "status")
    wait_for("a first answer", lambda: status.get_attribute("data-state") == "ok")
    server.stop()
    wait_for("the failure shown", lambda: status.get_attribute("data-state") == "error")
    assert "server not answering" in status.text
    assert browser.metric("clicks") == 0, "the last numbers stay on screen"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_dashboard_fits_a_phone_in_light_and_dark(
    server: TapadServer, tmp_path: Path, scheme: str
) -> None:
    phone = Browser(tmp_path / "phone", width=390, height=844)
    try:
        phone.driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
        )
        phone.driver.get(f"{server.url}/")
        wait_for("24 points", lambda: phone.points() == 24)
        width = phone.driver.execute_script("return document.documentElement.scrollWidth")
        inner = phone.driver.execute_script("return window.innerWidth")
        assert width <= inner, f"the page is {width}px wide on a {inner}px phone"
        background = phone.driver.execute_script(
            "return getComputedStyle(document.body).backgroundColor"
        )
        dark = background == "rgb(16, 19, 23)"
        assert dark == (scheme == "dark"), background
        assert console_errors(phone, server) == []
        table = phone.driver.find_element(By.CSS_SELECTOR, ".table-wrap")
        assert table.size["height"] > 24 * 20, "the hours table is not as tall as its rows"
        assert phone.driver.execute_script(
            "const t = document.querySelector('.table-wrap'); return t.scrollWidth <= t.clientWidth"
        ), "the hours table scrolls sideways on a phone"
    finally:
        phone.quit()


def test_scale_switch_and_a_busy_hour(server: TapadServer, browser: Browser) -> None:
    """One busy hour beside quiet ones starts on a log scale; the switch changes it."""
    now_ms = int(time.time() * 1000)
    hour = current_hour()
    for i in range(30):
        post(server, now_ms, f"busy{i}", "impression")
    post(server, (hour - 3) * MS_PER_HOUR, "quiet", "impression")
    browser.driver.get(f"{server.url}/")
    chart = browser.driver.find_element(By.ID, "chart")
    switch = browser.driver.find_element(By.ID, "scale")
    wait_for("a log scale", lambda: chart.get_attribute("data-scale") == "log")
    assert switch.get_attribute("aria-pressed") == "true"
    switch.click()
    wait_for("a linear scale", lambda: chart.get_attribute("data-scale") == "linear")
    assert switch.get_attribute("aria-pressed") == "false"
    before = len(_reads(browser))  # the refreshes that follow keep the user's choice
    wait_for("two more refreshes", lambda: len(_reads(browser)) >= before + 2)
    assert chart.get_attribute("data-scale") == "linear"
    switch.click()
    wait_for("log again", lambda: chart.get_attribute("data-scale") == "log")
    assert console_errors(browser, server) == []


def _reads(browser: Browser) -> list[str]:
    browser.collect_logs()
    return [u for u in browser.requests if "/analytics?timestamp=" in u]


def test_daily_unique_users_and_utc_times(server: TapadServer, browser: Browser) -> None:
    post(server, int(time.time() * 1000), "ann", "click")
    browser.driver.get(f"{server.url}/")
    days = wait_for(
        "seven days of unique users",
        lambda: browser.driver.find_elements(By.CSS_SELECTOR, '[data-metric="daily_unique_users"]'),
    )
    assert len(days) == 7
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert days[0].get_attribute("data-day") == today, "newest day first"
    if has_uniques(server):
        wait_for("today's unique users", lambda: days[0].text.replace("\u2248 ", "") == "1")
    else:
        assert [d.text for d in days] == ["\u2014"] * 7
    status = browser.driver.find_element(By.ID, "status")
    wait_for("a first answer", lambda: status.get_attribute("data-state") == "ok")
    assert re.fullmatch(r"last refreshed \d\d:\d\d:\d\d UTC · server answered", status.text)
    assert status.get_attribute("title"), "the local time in a tooltip"
    assert console_errors(browser, server) == []


def test_an_empty_store_says_how_to_send_a_first_event(
    server: TapadServer, browser: Browser
) -> None:
    browser.driver.get(f"{server.url}/")
    hint = browser.driver.find_element(By.ID, "first-event")
    wait_for("the first-event hint", hint.is_displayed)
    curl = browser.driver.find_element(By.ID, "first-curl").text
    assert curl.startswith(f'curl -X POST "{server.url}/analytics?timestamp='), curl
    command = curl.replace("$(date +%s)000", str(int(time.time() * 1000)))
    assert subprocess.run(["sh", "-c", command + " --fail --silent"], timeout=30).returncode == 0
    wait_for("the hint gone after the first event", lambda: not hint.is_displayed())
    assert browser.metric("impressions") == 1
    assert console_errors(browser, server) == []


@pytest.mark.timeout(120)  # a browser over a day of loadgen data
def test_screenshot_on_loadgen_data(server: TapadServer, browser: Browser, tmp_path: Path) -> None:
    """The README's picture: a day of ``tapad loadgen post`` traffic on the dashboard."""
    done = subprocess.run(
        [
            sys.executable, "-m", "tapad", "loadgen", "post", "--url", server.url,
            "-n", "8000", "-c", "16", "--old-hours", "23", "--seed", "7", "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    _, _, body = http("GET", f"{server.url}/analytics?timestamp={int(time.time() * 1000)}")
    clicks_now = int(body.split("\n")[1].split(",")[1])
    browser.driver.set_window_size(1280, 1400)
    browser.driver.get(f"{server.url}/")
    wait_for("the loadgen hour on the page", lambda: (browser.metric("clicks") or 0) >= clicks_now)
    wait_for("24 points", lambda: browser.points() == 24)
    wait_for(
        "today's unique users",
        lambda: (
            browser.driver.find_element(By.CSS_SELECTOR, '[data-metric="daily_unique_users"]')
            .text.replace("\u2248 ", "")
            .replace(",", "")
            .isdigit()
        ),
    )
    out = Path(os.environ.get("TAPAD_DASHBOARD_PNG") or tmp_path / "dashboard.png")
    assert browser.driver.save_screenshot(str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert console_errors(browser, server) == []

    # the same data on a phone in dark mode, beside it
    phone = Browser(tmp_path / "phone", width=390, height=1100)
    try:
        phone.driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
        )
        phone.driver.get(f"{server.url}/")
        wait_for("24 points on the phone", lambda: phone.points() == 24)
        wait_for("numbers on the phone", lambda: (phone.metric("clicks") or 0) >= clicks_now)
        dark = out.with_name(f"{out.stem}-phone-dark.png")
        assert phone.driver.save_screenshot(str(dark))
    finally:
        phone.quit()


def test_dashboard_files_are_served_from_the_package(server: TapadServer) -> None:
    status, headers, body = http("GET", f"{server.url}/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert 'data-metric="clicks"' in body
    for path in re.findall(r'(?:src|href)="(/static/[^"]+)"', body):
        status, _, _ = http("GET", f"{server.url}{path}")
        assert status == 200, path
    assert re.findall(r'(?:src|href)="(https?:[^"]+)"', body) == []
    assert http("POST", f"{server.url}/")[0] == 405
    assert http("GET", f"{server.url}/static/nothing.js")[0] == 404


def test_dashboard_asks_for_the_read_token_and_keeps_it_for_the_tab(
    sqlite_url: str, browser: Browser
) -> None:
    read, write = "dash-read-5e1b", "dash-write-a90c"
    server = TapadServer(sqlite_url, "--read-token", read, "--write-token", write).start()
    try:
        now_ms = int(time.time() * 1000)
        for user, kind in [("ann", "click"), ("bob", "impression")]:
            url = f"{server.url}/analytics?timestamp={now_ms}&user={user}&{kind}&key={write}"
            assert http("POST", url)[0] == 200
        browser.driver.get(f"{server.url}/")
        form = browser.driver.find_element(By.ID, "token-form")
        field = browser.driver.find_element(By.ID, "token")
        wait_for("the token asked for", form.is_displayed)
        assert browser.metric("clicks") is None, "numbers shown without the token"

        field.send_keys(write)  # a write token does not read: asked again
        form.submit()
        wait_for("the refused token asked for again", lambda: "refused" in form.text)
        field.send_keys(read)
        form.submit()
        wait_for(
            "the numbers, with the token",
            lambda: browser.metrics() == {"unique_users": 2, "clicks": 1, "impressions": 1},
        )
        assert not form.is_displayed()
        assert wait_for("the chart", lambda: browser.points() == 24)

        browser.driver.refresh()  # the same tab: the token is kept, not asked again
        wait_for("the numbers after a reload", lambda: browser.metric("clicks") == 1)
        assert not browser.driver.find_element(By.ID, "token-form").is_displayed()
    finally:
        server.stop()
    browser.collect_logs()
    outside = [u for u in browser.requests if read in u or write in u]
    assert outside == [], f"a token in a URL: {outside}"
    assert read not in server.log.decode()
