"""tapad's Python client: events buffered, sent as batches, retried with their ids.

``Client`` sends from a background thread, ``AsyncClient`` from an asyncio task. Both
stamp each event with a timestamp and an id when it is given, so a batch retried after
a timeout or a ``503``/``504`` is counted once by the server (its ids are remembered).
Nothing is dropped silently: a full queue raises ``QueueFull``, a refused batch reaches
``on_error`` and the log, and ``flush()`` says how many events are still in flight.

This package imports nothing of the server or the stores: it needs httpx and msgspec.
"""

from __future__ import annotations

from tapad.client.aio import AsyncClient
from tapad.client.errors import DeliveryError, FlushTimeout, QueueFull
from tapad.client.sync import Client

__all__ = ["AsyncClient", "Client", "DeliveryError", "FlushTimeout", "QueueFull"]
