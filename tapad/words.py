"""Counted nouns for the lines people read: ``1 hour``, ``2 hours``, ``12,000 events``."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun in the form that goes with it, thousands separated."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
