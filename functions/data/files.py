"""A user's images as a list of files: a folder or a CSV read into one manifest, and its fingerprint.

Layouts (the torchvision ``ImageFolder`` one, and tl-tradeoff's split files):

- ``root/<label>/<image>``: one split; the toolkit draws a seeded, class-stratified test split
  and records it in the manifest (which files are test);
- ``root/{train,val,test}/<label>/<image>``: the splits as given (``val`` optional);
- a CSV ``path,label[,split][,domain]`` (a header row; paths relative to the CSV's folder).

Every file is read once here to hash its content: the fingerprint, a SHA-256 over the sorted
lines ``path<TAB>label<TAB>split<TAB>content SHA-256`` (split empty where the toolkit draws it;
a CSV's domain a fifth field), names one version of the files, keys their image cache and is
stored in results files with how the test split was drawn (:attr:`Manifest.version`); two
manifests name what changed between them.
Torch-free: listing and checking a folder loads no tensor library.
"""
from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

from ..core.errors import DataError

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
CSV_COLUMNS = ("path", "label", "split", "domain")
TEST_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass(frozen=True)
class Entry:
    """One image: its path relative to the root (POSIX), class name, split, domain and content hash."""

    path: str
    label: str
    split: str
    sha256: str
    domain: str | None = None


@dataclass(frozen=True)
class Manifest:
    """The files of one version of a dataset, sorted by path (the order of its image cache)."""

    name: str
    root: Path                      # the folder the paths are relative to (the CSV's folder for a CSV)
    entries: tuple[Entry, ...]
    test_drawn: dict | None = None  # {"fraction", "seed"} when the toolkit drew the test split

    @cached_property
    def fingerprint(self) -> str:
        """The files' identity; a drawn split does not count (it follows from the files, the
        fraction and the seed), so a one-split folder's fingerprint is that of its files alone."""
        return fingerprint((e.path, e.label, "" if self.test_drawn else e.split, e.sha256)
                           + ((e.domain,) if e.domain is not None else ()) for e in self.entries)

    @property
    def version(self) -> dict:
        """What a results file records to refuse another version later: the fingerprint, the
        class names and the test split (``given``, or the fraction and seed it was drawn with)."""
        return {"name": self.name, "fingerprint": self.fingerprint, "classes": self.classes,
                "test_split": self.test_drawn or "given"}

    @property
    def classes(self) -> list[str]:
        return sorted({e.label for e in self.entries})

    @property
    def domains(self) -> list[str]:
        return sorted({e.domain for e in self.entries if e.domain is not None})

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class, per split present: ``{"train": {"cat": 40, ...}, "test": {...}}``."""
        out: dict = {}
        for e in self.entries:
            out.setdefault(e.split, Counter())[e.label] += 1
        return {split: {c: out[split][c] for c in self.classes} for split in SPLITS if split in out}

    def records(self) -> dict:
        """The manifest as plain JSON (stored beside the cache, so a later version can name what changed)."""
        return {"name": self.name, "root": str(self.root), "fingerprint": self.fingerprint,
                "test_drawn": self.test_drawn, "entries": [asdict(e) for e in self.entries]}

    @classmethod
    def from_records(cls, records: dict) -> "Manifest":
        return cls(records["name"], Path(records["root"]), tuple(Entry(**e) for e in records["entries"]),
                   records["test_drawn"])


def fingerprint(rows) -> str:
    """SHA-256 over the sorted lines of ``(relative path, label, split, content SHA-256[, domain])``
    rows, fields joined by tabs: stable under moving or renaming the root and reordering a CSV,
    changed by any file added, removed, relabelled, moved between given splits or edited."""
    lines = []
    for row in rows:
        bad = next((f for f in row if "\t" in f or "\n" in f or "\r" in f), None)
        if bad is not None:
            raise DataError(f"{bad!r} contains a tab or line break; rename the file or label without them")
        lines.append("\t".join(row) + "\n")
    digest = hashlib.sha256()
    for line in sorted(lines):
        digest.update(line.encode("utf-8"))
    return digest.hexdigest()


def describe_changes(old: Manifest, new: Manifest, limit: int = 3) -> str:
    """What changed from ``old`` to ``new`` in one line, e.g. ``1 file added (cat/b.png); 1 file
    relabelled (dog/x.png -> cat/x.png)``; empty when nothing did.  A file that left one path and
    appears at another with the same content (moved to another class or split folder) counts as
    relabelled or moved, not as removed and added.  Splits count where both versions give them;
    otherwise a change of the draw (fraction, seed) is named."""
    before, after = {e.path: e for e in old.entries}, {e.path: e for e in new.entries}
    removed = {p: before[p] for p in sorted(before.keys() - after.keys())}
    added = {p: after[p] for p in sorted(after.keys() - before.keys())}
    arrived = {}
    for path, e in added.items():
        arrived.setdefault(e.sha256, []).append(path)
    pairs = []  # (old entry, new entry) of the same content at another path
    for path, e in list(removed.items()):
        if arrived.get(e.sha256):
            pairs.append((e, added.pop(arrived[e.sha256].pop(0))))
            del removed[path]
    pairs += [(before[p], after[p]) for p in sorted(before.keys() & after.keys())]

    def named(kind: str, items: list[str]) -> str:
        shown = ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
        return f"{len(items)} file{'s' if len(items) != 1 else ''} {kind} ({shown})"

    def moved(a: Entry, b: Entry, what: str) -> str:
        return f"{a.path} -> {b.path}" if a.path != b.path else f"{a.path}: {getattr(a, what)} -> {getattr(b, what)}"

    parts = [
        ("added", list(added)),
        ("removed", list(removed)),
        ("relabelled", [moved(a, b, "label") for a, b in pairs if a.label != b.label]),
        ("moved between splits", [moved(a, b, "split") for a, b in pairs if a.label == b.label and a.split != b.split
                                  and old.test_drawn is None and new.test_drawn is None]),
        ("moved between domains", [moved(a, b, "domain") for a, b in pairs if a.domain != b.domain]),
        ("edited", [b.path for a, b in pairs if a.sha256 != b.sha256]),
    ]
    changes = [named(kind, items) for kind, items in parts if items]
    if old.test_drawn != new.test_drawn:
        changes.append(f"test split {_drawn(old.test_drawn)} then, {_drawn(new.test_drawn)} now")
    return "; ".join(changes)


def _drawn(test_drawn: dict | None) -> str:
    return "given" if test_drawn is None else f"drawn with fraction {test_drawn['fraction']}, seed {test_drawn['seed']}"


# ----------------------------------------------------------------------------- reading

def read_manifest(path, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> Manifest:
    """The manifest of an image folder or CSV (see the module doc); a one-split folder or a CSV
    without a split column gets a drawn test split of ``test_fraction`` of each class."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such folder or CSV file; give an image folder (<root>/<label>/<image>) "
                        f"or a CSV of path,label[,split][,domain]")
    if not 0 < test_fraction < 1:
        raise DataError(f"test fraction {test_fraction} must be in (0, 1), e.g. 0.2")
    if path.is_dir():
        root = path.resolve()
        rows, layout_has_splits = _folder_rows(root)
        name = root.name
    elif path.suffix.lower() == ".csv":
        root = path.resolve().parent
        rows, layout_has_splits = _csv_rows(path)
        name = path.stem
    else:
        raise DataError(f"{path} is neither a folder nor a .csv file; give an image folder or a CSV of "
                        f"path,label[,split][,domain]")
    with ThreadPoolExecutor(reader_threads()) as pool:  # hashlib and file reads release the GIL
        hashes = list(pool.map(lambda row: file_sha256(root / row[0]), rows))
    entries = [Entry(rel, label, split or "train", sha, domain)
               for (rel, label, split, domain), sha in zip(rows, hashes)]
    _check_classes(entries, name, layout_has_splits)
    drawn = None
    if not layout_has_splits:
        entries = draw_test_split(entries, test_fraction, seed)
        drawn = {"fraction": test_fraction, "seed": seed}
    check_leakage(entries)
    return Manifest(name, root, tuple(sorted(entries, key=lambda e: e.path)), drawn)


def reader_threads() -> int:
    """Threads that read or decode files side by side: the cores this process may use, at most 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores))


def _folder_rows(root: Path) -> tuple[list, bool]:
    """(relative path, label, split, domain) of every image of a folder, and whether it gives splits."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    named = [p.name for p in subdirs if p.name in SPLITS]
    others = [p.name for p in subdirs if p.name not in SPLITS]
    if named and others:
        raise DataError(f"{root} mixes split folders {named} with other folders {others[:3]}: put every class "
                        f"folder inside train/ and test/ (and val/), or name no folder {'/'.join(SPLITS)}")
    has_splits = bool(named)
    if has_splits:
        missing = [s for s in ("train", "test") if not (root / s).is_dir()]
        if missing:
            raise DataError(f"{root} has split folders {[p.name for p in subdirs]} but no {missing[0]}/: add "
                            f"{root / missing[0]}/<label>/<image>, or put the class folders directly in {root}")
        rows = [row for s in subdirs for row in _class_folders(root, s, s.name)]
    else:
        rows = _class_folders(root, root, None)
    return rows, has_splits


def _class_folders(root: Path, parent: Path, split: str | None) -> list:
    rows = []
    for item in sorted(parent.iterdir()):
        if item.name.startswith("."):
            continue  # hidden files (.DS_Store) and folders
        if not item.is_dir() or item.suffix.lower() in SUFFIXES:
            if item.suffix.lower() in SUFFIXES:
                raise DataError(f"{item} is not inside a class folder: move it into {parent}/<label>/")
            continue  # a README or licence beside the class folders
        images = [_image_file(root, f) for f in sorted(item.iterdir()) if not f.name.startswith(".")]
        if not images:
            raise DataError(f"class folder {item} holds no images: add images to it or remove it")
        rows += [(rel, item.name, split, None) for rel in images]
    if not rows:
        raise DataError(f"{parent} has no class folders: arrange the images as {parent}/<label>/<image>")
    return rows


def _image_file(root: Path, path: Path) -> str:
    """``path`` relative to ``root`` once it is a readable image file inside the root."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError) as err:  # a dangling link, or a loop (RuntimeError before Python 3.13)
        raise DataError(f"{path} is a broken or looping symbolic link ({err.__class__.__name__}): "
                        f"point it at an image inside {root} or remove it") from None
    if not target.is_relative_to(root):
        raise DataError(f"{path} is a symbolic link to {target}, outside {root}: copy the image into the "
                        f"folder instead")
    if path.suffix.lower() not in SUFFIXES:
        kind = "a folder" if target.is_dir() else "not an image file"
        raise DataError(f"{path} is {kind} (images are {', '.join(SUFFIXES)} in any case): move it out of the "
                        f"class folder")
    if target.is_dir():
        raise DataError(f"{path} is a folder named like an image, not an image file: class folders hold "
                        f"image files directly; move its contents up or remove it")
    if not target.is_file():
        raise DataError(f"{path} is not a regular file (a pipe, socket or device): replace it with the image file")
    return path.relative_to(root).as_posix()


def _csv_rows(path: Path) -> tuple[list, bool]:
    root = path.resolve().parent
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or []]
            lines = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path} cannot be read as a UTF-8 CSV ({err}); save it as UTF-8 with a header "
                        f"row path,label[,split][,domain]") from None
    missing = [c for c in ("path", "label") if c not in header]
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if missing or unknown:
        problem = f"has no column {missing}" if missing else f"has unknown column(s) {unknown}"
        raise DataError(f"{path} {problem} (header {header}): its first row must name the columns "
                        f"path,label[,split][,domain]")
    has_splits, rows, seen = "split" in header, [], {}
    for line, row in lines:
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        rel, label = row["path"], row["label"]
        if not rel or not label:
            raise DataError(f"{path} line {line}: empty {'path' if not rel else 'label'}; give every row a path "
                            f"and a label")
        split = row.get("split") if has_splits else None
        if has_splits and split not in SPLITS:
            raise DataError(f"{path} line {line}: unknown split {split!r}; use one of {list(SPLITS)}")
        if Path(rel).is_absolute():
            raise DataError(f"{path} line {line}: {rel} is an absolute path; give paths relative to the CSV's folder")
        rel = Path(rel).as_posix()
        if rel in seen:
            raise DataError(f"{path} lines {seen[rel]} and {line} both list {rel}: keep one row per image")
        seen[rel] = line
        file = root / rel
        if not file.exists() and not file.is_symlink():
            raise DataError(f"{path} line {line}: {file} does not exist; fix the path (relative to {root}) "
                            f"or remove the row")
        _image_file(file.parent.resolve(), file)  # suffix, folder, broken or looping link
        rows.append((rel, label, split, row.get("domain") or None))
    if not rows:
        raise DataError(f"{path} lists no images: add rows path,label[,split][,domain] below the header")
    return rows, has_splits


def file_sha256(file: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks (images of any size in bounded memory); an
    unreadable or empty file is refused, naming it."""
    digest, size = hashlib.sha256(), 0
    try:
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
    except OSError as err:
        raise DataError(f"{file} cannot be read ({err.strerror or err}): check its permissions "
                        f"(chmod a+r) or remove it") from None
    if not size:
        raise DataError(f"{file} is empty (0 bytes), not an image: replace it with the image or remove it")
    return digest.hexdigest()


def _check_classes(entries: list[Entry], name: str, has_splits: bool) -> None:
    classes = sorted({e.label for e in entries})
    if len(classes) < 2:
        raise DataError(f"{name} has a single class {classes}: a classifier needs at least two; add a folder "
                        f"(or rows) of another class")
    if has_splits:
        for split in ("train", "test"):
            present = {e.label for e in entries if e.split == split}
            absent = [c for c in classes if c not in present]
            if absent:
                raise DataError(f"{name}: class {absent[0]!r} has no image in the {split} split; add some, or "
                                f"let the toolkit draw the test split (one folder of class folders, or no split "
                                f"column)")


# ----------------------------------------------------------------------------- splits and leakage

def draw_test_split(entries: list[Entry], fraction: float, seed: int) -> list[Entry]:
    """Entries with ``round(fraction * n)`` images of each class (at least one, leaving one for
    training) marked test.  Each class's images are ranked by a seeded hash of their content, so
    the draw does not depend on the order files are listed in, adding one image moves at most one
    other, and copies of one image stay on the same side."""
    by_class: dict = defaultdict(list)
    for e in entries:
        by_class[e.label].append(e)
    out = []
    for label in sorted(by_class):
        members = by_class[label]
        if len(members) < 2:
            raise DataError(f"class {label!r} has {len(members)} image: drawing a test split needs at least two "
                            f"per class; add images of {label!r} or give the splits (train/ and test/ folders)")
        groups: dict = defaultdict(list)
        for e in members:
            groups[e.sha256].append(e)
        ranked = sorted(groups, key=lambda h: hashlib.sha256(f"{seed}:{h}".encode()).hexdigest())
        want = min(max(1, round(fraction * len(members))), len(members) - 1)
        test: set = set()
        for h in ranked:
            if len(test) >= want or len(members) - len(test) - len(groups[h]) < 1:
                break
            test.update(e.path for e in groups[h])
        out += [Entry(e.path, e.label, "test" if e.path in test else "train", e.sha256, e.domain) for e in members]
    return out


def check_leakage(entries) -> None:
    """Refuse an image whose content is in the test split and in training (train or val)."""
    training = defaultdict(list)
    for e in entries:
        if e.split != "test":
            training[e.sha256].append(e.path)
    pairs = [(t, e.path) for e in entries if e.split == "test" for t in training.get(e.sha256, ())]
    if pairs:
        shown = ", ".join(f"{a} = {b}" for a, b in pairs[:3])
        shown += f", ... ({len(pairs) - 3} more)" if len(pairs) > 3 else ""
        raise DataError(f"{len(pairs)} test image(s) have the same content as a training image (leakage): {shown}; "
                        f"remove the copies from one side")
