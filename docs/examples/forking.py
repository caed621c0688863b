"""A client shared across fork(): the parent and each child send their own events.

A forked child starts with its own sender and an empty queue (what gunicorn's
``preload_app`` or uWSGI do to an app that made a client at import).
``python docs/examples/forking.py URL CHILDREN EVENTS``.
"""

import os
import sys

from tapad.client import Client

url, children, events = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tapad = Client(url)
for n in range(events):
    tapad.click(f"parent-{n}")  # sent before the fork, by the parent's sender

pids = []
for child in range(children):
    pid = os.fork()
    if pid == 0:  # the child: its own queue and sender; it ends through sys.exit
        for n in range(events):
            tapad.impression(f"child-{child}-{n}")
        sys.exit(0)  # the exit hook delivers what is pending
    pids.append(pid)

for n in range(events):
    tapad.click(f"parent-after-{n}")
for pid in pids:
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
tapad.close()
