"""One launch at a time per bundle: an exclusive lock file naming its holder.

Why: two `specc launch` of the same run both ran the data stage into the same output
directories. The lock is created with O_CREAT|O_EXCL (atomic on local filesystems) and
holds pid, host and start time; a lock whose pid is gone on this same host is stale and
is taken over. `specc status`/`cancel` do not take it.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = "launch.lock"
POLL_S = 0.5
"""How often a waiting launch looks at the lock again."""


class LockHeld(Exception):
    """Another launch holds the bundle; the message names it."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _try_create(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, handle)
    return True


def _stale(holder: dict | None) -> bool:
    """Stale only when provably dead: same host and the pid no longer exists."""
    if holder is None:
        return False
    pid = holder.get("pid")
    return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid)


@contextlib.contextmanager
def launch_lock(state_dir: Path, wait_s: float = 0.0, on_wait=None, poll_s: float = POLL_S):
    """Hold the bundle's launch lock for the block; LockHeld names the holder if taken.

    With `wait_s` > 0 a held lock is polled until it is released (or goes stale) for at most
    `wait_s` seconds; `on_wait(message)` is told once whom it waits for."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_NAME
    deadline = time.monotonic() + wait_s
    told = False
    while not _try_create(path):
        holder = _holder(path)
        if _stale(holder):
            path.unlink(missing_ok=True)
            continue
        who = (f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')}"
               if holder else "an unreadable lock")
        if time.monotonic() >= deadline:
            waited = f" (waited {wait_s:g} s)" if wait_s > 0 else ""
            raise LockHeld(f"another `specc launch` of this run is in progress ({who}){waited}; "
                           f"wait for it (--wait-for-lock), or remove {path} if that process is gone")
        if not told and on_wait is not None:
            on_wait(f"waiting for the launch in progress ({who}) to finish; Ctrl-C to stop")
            told = True
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
