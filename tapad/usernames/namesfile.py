"""The names file: one name a line, read leniently and written atomically.

Loadgen and fetch share this file, so a crash half-way through a write must never
leave a truncated list behind: we write a temp file next to it and rename.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


class NamesFileError(Exception):
    """The names file cannot be read or written; ``str()`` is one line for the user."""


def read_names(path: Path, *, missing_ok: bool = False) -> list[str]:
    """Distinct non-blank names in file order, so merging keeps what the user already had."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return []
        raise NamesFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise NamesFileError(f"{path} is a directory, not a names file") from None
    except UnicodeDecodeError:
        raise NamesFileError(f"{path} is not UTF-8 text (one name a line)") from None
    except OSError as exc:
        raise NamesFileError(f"cannot read {path}: {exc.strerror}") from None
    return list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))


def write_names(path: Path, names: Iterable[str]) -> None:
    """Replace ``path`` in one rename so readers see the old list or the new one, never half."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise NamesFileError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for name in names:
                handle.write(name)
                handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise NamesFileError(f"cannot write {path}: {exc.strerror}") from None
