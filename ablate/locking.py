"""One writer per results folder: `ablate run` and `ablate merge` hold an exclusive lock on it.

The lock is a `flock` on `<folder>/.ablate.lock`, which holds the writer's pid and host while it runs.
The kernel drops it when its holder dies (even by SIGKILL), so a lock file with content that nobody
holds is stale. Readers that must not see a folder mid-write (`ablate merge` reading its sources) ask
:func:`in_use` first.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from ablate.experiment import ExperimentError
from ablate.provenance import iso_time

LOCK_NAME = ".ablate.lock"  # held by the one writer of a results folder


def in_use(folder: Path) -> str | None:
    """Who holds `folder`'s lock now ("pid ... on host since ..."), or None; never creates the file."""
    lock = folder / LOCK_NAME
    if not lock.is_file():
        return None
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return handle.read().strip() or "another process"
    return None


@contextmanager
def folder_lock(output: Path, check: Callable[[], None] = lambda: None):
    """One driver per results folder: an exclusive `flock` on `<output>/.ablate.lock`, holding the
    driver's pid and host while it runs. A second driver refuses in one line naming the holder. The
    kernel drops the lock when its holder dies (even by SIGKILL), so a lock file left with content but
    not held is stale: noted, and taken over. `check` runs once the lock is held and before anything
    is written (a refusal there leaves the folder as it was); folders this call created are removed
    again if nothing but the lock was written into them."""
    if output.exists() and not output.is_dir():
        raise ExperimentError(f"{output} is a file, not a results folder: choose another --output")
    created = [p for p in (output, *output.parents) if not p.exists()]  # innermost first
    output.mkdir(parents=True, exist_ok=True)
    handle = open(output / LOCK_NAME, "a+")
    claimed = False
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ExperimentError(
                f"{output} is in use by another `ablate run` ({holder}): wait for it to finish, or use another --output"
            ) from None
        check()
        handle.seek(0)
        stale = handle.read().strip()
        if stale:
            print(
                f"[ablate] note: an earlier run ({stale}) ended without releasing {output / LOCK_NAME}; taking it over",
                flush=True,
            )
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {iso_time(time.time())}")
        handle.flush()
        claimed = True
        yield
    finally:
        if claimed:
            handle.seek(0)
            handle.truncate()
            handle.flush()
        handle.close()  # closing drops the flock
        if created and [p.name for p in output.iterdir()] == [LOCK_NAME]:
            (output / LOCK_NAME).unlink()
            for folder in created:
                if folder.exists() and not any(folder.iterdir()):
                    folder.rmdir()
