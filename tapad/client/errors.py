"""What a client raises or reports: every undelivered event is named by one of these."""

from __future__ import annotations


class QueueFull(Exception):
    """``max_queue`` events are given and not yet acknowledged or refused; the event was
    not taken (after waiting ``max_block`` seconds, for ``Client``)."""


class FlushTimeout(Exception):
    """``flush(timeout)`` ran out of time; ``pending`` events are neither acknowledged nor
    refused yet (they are still being delivered)."""

    def __init__(self, pending: int, timeout: float) -> None:
        super().__init__(
            f"{pending} event{'s' if pending != 1 else ''} neither acknowledged nor refused "
            f"after {timeout:g}s"
        )
        self.pending = pending


class DeliveryError(Exception):
    """A batch the server refused (``400``, ``401``, ``413``...) or that could not be
    delivered within ``retry_for`` seconds: its events are not recorded and will not be
    sent again. ``status`` is the HTTP status (None when no answer came), ``message`` the
    server's line (or what went wrong), ``events`` how many events it held."""

    def __init__(self, status: int | None, message: str, events: int) -> None:
        what = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(
            f"{events} event{'s' if events != 1 else ''} not recorded ({what}): {message}"
        )
        self.status = status
        self.message = message
        self.events = events
