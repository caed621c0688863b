"""How a server process logs: one line per record on stderr, with the time and the logger.

Apart from the server's code so that the CLI sets it up before anything logs, and the
supervisor's workers the same way.
"""

from __future__ import annotations

import logging
import sys


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
