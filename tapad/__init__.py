"""tapad: real-time analytics for ad clicks and impressions."""

__version__ = "0.1.0"
