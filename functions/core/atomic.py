"""Files written whole or not at all: a temporary file beside the target, then a rename.

An interrupted write (Ctrl-C, a full disk, a killed job) leaves the previous file in place, so a
resumed sweep never reads half a results file.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


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
    """A matplotlib figure as PNG, atomically and without the software-version stamp, so equal
    figures give equal files."""
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi, metadata={"Software": None})
    return Path(path)
