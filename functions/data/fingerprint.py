"""One hash that names a version of a dataset of files.

A dataset of image files is the same dataset exactly when the same files carry the same labels in
the same splits: the fingerprint is SHA-256 over the sorted lines
``f"{relative_path}\\t{label}\\t{split}\\t{file_sha256}\\n"`` (split ``""`` when none is given), so
it does not depend on the order files are listed in, on timestamps or on where the folder lies.
"""
from __future__ import annotations

import hashlib

from ..core.errors import DataError


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes, read in blocks (images of any size, bounded memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(entries) -> str:
    """SHA-256 over the sorted lines of ``(relative_path, label, split, file_sha256)`` entries; a
    tab or line break inside a field would make two datasets share a line, so it is refused."""
    lines = []
    for entry in entries:
        fields = [str(field) for field in entry]
        if len(fields) != 4:
            raise DataError(f"fingerprint entry {entry!r} has {len(fields)} fields; give "
                            f"(relative_path, label, split, file_sha256)")
        bad = next((f for f in fields if "\t" in f or "\n" in f or "\r" in f), None)
        if bad is not None:
            raise DataError(f"{bad!r} contains a tab or line break; rename the file or label without them")
        lines.append("\t".join(fields) + "\n")
    digest = hashlib.sha256()
    for line in sorted(lines):
        digest.update(line.encode("utf-8"))
    return digest.hexdigest()
