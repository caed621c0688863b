"""A real headless Chromium (Debian's chromium + chromium-driver) for tests, and a static web
server on another port, so a page can be of another origin than tapad.

The browser is told never to fetch anything on its own (no updates, no sync, no background
networking): the only requests it makes are the ones a test's page makes.
"""

from __future__ import annotations

import functools
import os
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.support import LOOPBACK

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-extensions",
    "--hide-scrollbars",
)


def chromium(
    profile: Path, width: int = 1280, height: int = 1000, network: bool = False
) -> webdriver.Chrome:
    """A fresh headless Chromium, logging its console (and with ``network``, every request
    it makes, in the "performance" log)."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"{path} is missing (apt-get install -y {package})")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    logs = {"browser": "ALL", "performance": "ALL"} if network else {"browser": "ALL"}
    options.set_capability("goog:loggingPrefs", logs)
    return webdriver.Chrome(
        options=options,
        service=Service(executable_path=CHROMEDRIVER, log_output=subprocess.DEVNULL),
    )


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class StaticSite:
    """Files of ``root`` over HTTP on a free loopback port: a page of its own origin."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pages = 0
        handler = functools.partial(_Quiet, directory=str(root))
        self.httpd = ThreadingHTTPServer((LOOPBACK, 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="static site")

    @property
    def origin(self) -> str:
        return f"http://{LOOPBACK}:{self.httpd.server_address[1]}"

    def page(self, name: str, html: str) -> str:
        """Write one page and return its URL, a new one each time (a browser may keep a page
        it loaded before, with the address of another test's server in it)."""
        self.pages += 1
        path = self.root / f"{self.pages}-{name}"
        path.write_text(html)
        return f"{self.origin}/{path.name}"

    def start(self) -> StaticSite:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
