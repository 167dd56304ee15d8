"""Debian packages as data sources: downloaded with ``apt-get download`` and unpacked with
``dpkg -x``, never installed, so any machine with apt sources (and no internet beyond them)
gets the files without root changes to its system."""
from __future__ import annotations

import subprocess
from pathlib import Path

from ..core.errors import DataError


def apt_download(package: str, into: Path, fix: str) -> Path:
    """The ``.deb`` of ``package`` (``name`` or ``name=version``) downloaded into ``into``; a
    fresh machine has no package lists yet, so a failure is retried once after ``apt-get update``.
    ``fix`` ends the error's line: what to do when even that fails."""
    into = Path(into)
    before = set(into.glob("*.deb"))
    command = ["apt-get", "download", package]
    try:
        fetched = subprocess.run(command, cwd=into, capture_output=True)
        if fetched.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            fetched = subprocess.run(command, cwd=into, capture_output=True)
    except OSError as err:  # no apt-get on this system
        raise DataError(f"`{' '.join(command)}` cannot run ({err.strerror}); {fix}") from err
    debs = sorted(set(into.glob("*.deb")) - before)
    if fetched.returncode != 0 or not debs:
        said = fetched.stderr.decode(errors="replace").strip().splitlines()
        reason = f" ({said[-1]})" if said else ""
        raise DataError(f"`{' '.join(command)}` failed{reason}; {fix}")
    return debs[0]


def unpack(deb: Path, into: Path) -> Path:
    """The files of ``deb`` under ``into`` (``dpkg -x``: extracted, not installed)."""
    try:
        done = subprocess.run(["dpkg", "-x", str(deb), str(into)], capture_output=True)
    except OSError as err:
        raise DataError(f"`dpkg -x {deb}` cannot run ({err.strerror}); install dpkg or build on a Debian or "
                        f"Ubuntu machine") from err
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        raise DataError(f"`dpkg -x {deb}` failed ({said[-1] if said else 'no message'}): the file is "
                        f"truncated or not a Debian package; delete it and rerun to download it again")
    return Path(into)
