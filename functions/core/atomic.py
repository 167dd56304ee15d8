"""Files written whole or not at all, and one writer at a time.

A write goes to a temporary file beside the target, then a rename: an interrupted write (Ctrl-C,
a full disk, a killed job) leaves the previous file in place, so a resumed sweep never reads half
a results file.  A rename alone still lets two processes lose each other's records (each writes
what it read before the other wrote), so a shared file is read, merged and written while holding
:func:`locked`.
"""
from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path


_HELD = threading.local()  # the lock files this thread holds, so a nested locked() does not wait on itself


@contextmanager
def locked(path):
    """Hold ``path``'s lock, an exclusive ``flock`` on the sibling file ``<name>.lock``, until the
    block ends: other processes wait, so what this one reads inside is still true when it writes.
    Re-entrant in a thread (a save inside a larger locked step takes it again); released by the
    system if the process dies; the lock file is removed on release, so folders hold no leftovers."""
    lock = Path(path).resolve()
    lock = lock.with_name(lock.name + ".lock")
    held = _HELD.__dict__.setdefault("files", set())
    if lock in held:
        yield
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock)
    held.add(lock)
    try:
        yield
    finally:
        held.discard(lock)
        lock.unlink(missing_ok=True)  # still held: a process waiting on this file sees it gone and retries
        os.close(fd)


def _acquire(lock: Path) -> int:
    """A descriptor holding ``flock`` on the file now at ``lock`` (the one that was there may have
    been removed by its previous holder while this process waited on it)."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_ino == _inode(lock):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


@contextmanager
def atomic_file(path, mode: str = "w"):
    """Open a temporary file for writing; on success it replaces ``path`` (readable by all, as
    results are), on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path, obj) -> None:
    """``obj`` as indented JSON, written atomically."""
    with atomic_file(path) as fh:
        json.dump(obj, fh, indent=1)
        fh.write("\n")


def write_png(fig, path, dpi: int = 150) -> Path:
    """A matplotlib figure as PNG, atomically, under the figure's lock and without the
    software-version stamp, so equal figures give equal files."""
    with locked(path), atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi, metadata={"Software": None})
    return Path(path)
