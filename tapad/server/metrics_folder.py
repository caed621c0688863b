"""The folder through which ``--workers N`` share their metrics.

The supervisor makes it and sets ``PROMETHEUS_MULTIPROC_DIR`` before it forks; every worker
writes its numbers to its own mmap'ed files there (see ``metrics``). A supervisor killed
with SIGKILL cannot remove its folder, so the next one removes folders whose supervisor is
gone: each is named after its supervisor's pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
FOLDER_PREFIX = "tapad-metrics-"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


@contextlib.contextmanager
def shared_folder() -> Iterator[str]:
    """For the supervisor: a fresh folder for the workers' metric files, removed at exit.

    A folder the user set in ``PROMETHEUS_MULTIPROC_DIR`` is used as it is and kept.
    """
    given = multiprocess_dir()
    if given is not None:
        os.makedirs(given, exist_ok=True)
        yield given
        return
    remove_orphaned_folders()
    directory = tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-")
    os.environ[MULTIPROC_ENV] = directory
    try:
        yield directory
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


def remove_orphaned_folders() -> None:
    """Remove metric folders whose supervisor is gone: one killed with SIGKILL (or a power
    cut) never removed its own. A folder whose pid is alive (even if reused by another
    process) is left alone."""
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*-*"):
        pid = folder.name[len(FOLDER_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # alive, someone else's
            continue


def worker_died(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay in the totals)."""
    directory = multiprocess_dir()
    if directory is not None:
        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid, directory)
