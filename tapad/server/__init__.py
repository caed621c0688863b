"""The HTTP server: request parsing, the group-commit write path, coalesced reads."""
