"""A script that sends events and ends without calling flush() or close().

The client flushes at interpreter exit (for up to ``exit_timeout`` seconds), so every
event is delivered. ``python docs/examples/no_flush.py URL COUNT``.
"""

import sys

from tapad.client import Client

tapad = Client(sys.argv[1])
for n in range(int(sys.argv[2])):
    tapad.impression(f"user-{n % 50}")
