"""``tapad serve``: one server process, or a supervisor and ``--workers N`` of them.

The one place that knows both ways to run, so that neither ``run`` (one process) nor
``workers`` (the supervisor, which runs ``run`` in each worker) imports the other.
"""

from __future__ import annotations

import asyncio

from tapad.eventloop import install_uvloop
from tapad.server.config import ServeSettings
from tapad.server.run import run_server
from tapad.server.workers import supervise


def serve(settings: ServeSettings) -> None:
    """Run until SIGTERM or SIGINT; raise StartupError if the server cannot start."""
    if settings.workers > 1:  # a supervisor and N worker processes on one port
        supervise(settings)
        return
    install_uvloop()
    asyncio.run(run_server(settings))
