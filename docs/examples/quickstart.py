"""Send a click and an impression to tapad from Python, then make sure they arrived.

Run it against a server: ``TAPAD_URL=http://127.0.0.1:8080 python docs/examples/quickstart.py``.
"""

import os

from tapad.client import Client

url = os.environ.get("TAPAD_URL", "http://127.0.0.1:8080")
with Client(url, write_token=os.environ.get("TAPAD_WRITE_TOKEN")) as tapad:
    tapad.click("alice")
    tapad.impression("bob", timestamp=1795802400000, id="order-17")
# Leaving the block flushed: both events are acknowledged, or an exception said why not.
print(tapad.stats())
