"""Image folders built from Debian packages of drawings and photo cut-outs.

``clipart`` (Open Clip Art Library drawings) and ``stamps`` (Tux Paint's stamps) share a class map
(:data:`functions.data.catalog.IMAGE_FOLDERS`): a real pair of domains, and ordinary
``<data root>/<name>/<label>/<image>.png`` folders, so every command reads them as it reads a
user's folder.  The package's PNG bytes are copied unchanged; the folder is written beside its
final place and renamed into it, so it is either complete or absent, and it counts only while its
fingerprint is the catalog's.
"""
from __future__ import annotations

import fnmatch
import os
import shutil
import struct
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from ..core.atomic import locked
from ..core.errors import DataError
from .catalog import IMAGE_FOLDERS, ImageFolderSpec
from .debian import apt_download, unpack
from .files import file_sha256, fingerprint


# Pillow's default decompression-bomb limit (Image.MAX_IMAGE_PIXELS), fixed here so that the build
# does not depend on a setting: readers keep that limit, so a larger drawing would be unreadable
MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_pixels(path: Path) -> int | None:
    """Width x height from a PNG's header (nothing decoded); None for a file that is not a PNG."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    if len(head) < 24 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return width * height


def _rebuild(name: str) -> str:
    return f"`python -m functions prepare-data {name}`"


def _in_class(folder: str, patterns) -> bool:
    """``folder`` (relative, '/'-separated) is one of ``patterns``; ``x/**`` also takes every folder below x."""
    for pattern in patterns:
        if pattern.endswith("/**"):
            top = pattern[:-3]
            if folder == top or folder.startswith(top + "/"):
                return True
        elif folder == pattern:
            return True
    return False


def class_files(tree: Path, spec: ImageFolderSpec) -> dict[str, list[str]]:
    """label -> the PNG files (paths relative to ``tree``, the package's image folder) the class map
    selects, within Pillow's size limit.  An image in two classes (by path or by content) belongs to neither; the same content
    twice in one class is kept once (the first path in sorted order), so no image can sit on both
    sides of a train/test split."""
    tree = Path(tree)
    labels_of = defaultdict(set)
    for path in sorted(tree.rglob("*")):
        if not path.is_file() or path.suffix.lower() != ".png" \
                or any(fnmatch.fnmatch(path.name, pattern) for pattern in spec.skip) \
                or not 0 < (png_pixels(path) or 0) <= MAX_PIXELS:
            continue
        rel = path.relative_to(tree).as_posix()
        folder = rel.rpartition("/")[0]
        for label, patterns in spec.classes.items():
            if _in_class(folder, patterns):
                labels_of[rel].add(label)
    single = {rel: next(iter(labels)) for rel, labels in labels_of.items() if len(labels) == 1}
    digest = {rel: file_sha256(tree / rel) for rel in single}
    classes_of_digest = defaultdict(set)
    for rel, label in single.items():
        classes_of_digest[digest[rel]].add(label)
    chosen, seen = {label: [] for label in spec.classes}, set()
    for rel in sorted(single):
        if len(classes_of_digest[digest[rel]]) == 1 and digest[rel] not in seen:
            seen.add(digest[rel])
            chosen[single[rel]].append(rel)
    return chosen


def image_name(rel: str) -> str:
    """A stable, unique file name for a package path: its folders and name joined by ``__``."""
    return rel.replace("/", "__")


def write_folder(tree: Path, chosen: dict[str, list[str]], into: Path) -> None:
    """``into/<label>/<image_name>``: the chosen files' bytes, unchanged."""
    for label, files in chosen.items():
        (into / label).mkdir(parents=True)
        for rel in files:
            shutil.copyfile(Path(tree) / rel, into / label / image_name(rel))


def folder_entries(folder: Path) -> list[tuple[str, str, str, str]]:
    """(relative path, label, split "", file SHA-256) of every file under an unsplit image folder."""
    entries = []
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            rel = path.relative_to(folder).as_posix()
            label = rel.split("/")[0] if "/" in rel else ""
            entries.append((rel, label, "", file_sha256(path)))
    return entries


def check_folder(name: str, folder: Path, fix: str) -> None:
    """Refuse ``folder`` unless its fingerprint is the catalog's for ``name``; the message names the
    classes whose counts differ, and ends with ``fix``."""
    spec = IMAGE_FOLDERS[name]
    entries = folder_entries(folder)
    if fingerprint(entries) == spec.fingerprint:
        return
    have = Counter(label for _, label, _, _ in entries)
    differ = [f"{label or '(top level)'} has {have.get(label, 0)} files, expected {spec.counts.get(label, 0)}"
              for label in sorted(set(have) | set(spec.counts)) if have.get(label, 0) != spec.counts.get(label, 0)]
    what = "; ".join(differ) if differ else "the counts match but files were renamed or changed"
    raise DataError(f"{name} at {folder} does not match its catalog fingerprint ({what}); {fix}")


def deb_path(spec: ImageFolderSpec, root: Path) -> Path:
    """Where the package's ``.deb`` is kept, so a rebuild does not download it again."""
    return Path(root) / "sources" / f"{spec.package}_{spec.version.replace(':', '%3a')}_all.deb"


def _fetch(spec: ImageFolderSpec, root: Path, log) -> Path:
    deb = deb_path(spec, root)
    if deb.is_file():
        return deb
    deb.parent.mkdir(parents=True, exist_ok=True)
    log(f"{spec.name}: fetching Debian's {spec.package} {spec.version} (unpacked, not installed)")
    with tempfile.TemporaryDirectory(dir=deb.parent, prefix=f".{spec.package}-") as tmp:
        fetched = apt_download(f"{spec.package}={spec.version}", Path(tmp),
                               f"{spec.name} needs that package: add a Debian/Ubuntu apt source that has it, "
                               f"or copy {deb.name} into {deb.parent}")
        os.replace(fetched, deb)
    return deb


def build(name: str, root: Path, log=print) -> Path:
    """``<root>/<name>``, written into a temporary folder beside it and renamed into place once its
    fingerprint is the catalog's."""
    spec = IMAGE_FOLDERS[name]
    folder = Path(root) / name
    deb = _fetch(spec, root, log)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}-"))
    try:
        with tempfile.TemporaryDirectory(prefix=f"{spec.package}-") as unpacked:
            tree = unpack(deb, Path(unpacked)) / spec.image_root
            if not tree.is_dir():
                raise DataError(f"{deb} has no folder {spec.image_root}: it is not the {spec.package} package; "
                                f"delete it and rerun {_rebuild(name)}")
            write_folder(tree, class_files(tree, spec), tmp)
        check_folder(name, tmp, f"{deb.name} is not the package the catalog was made from: delete {deb} and "
                                f"rerun {_rebuild(name)}")
        tmp.chmod(0o755)  # mkdtemp makes an owner-only folder
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"{name}: {sum(spec.counts.values())} images in {len(spec.counts)} classes written to {folder}")
    return folder


def prepare_image_folder(name: str, root: Path, log=print) -> Path:
    """``<root>/<name>`` verified by its fingerprint, built first when absent; a folder that does
    not verify is refused (never overwritten: it may hold someone's changes)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / name
    with locked(folder):
        if folder.exists():
            check_folder(name, folder, f"delete {folder} and run {_rebuild(name)} to rebuild it")
            return folder
        for leftover in root.glob(f".{name}-*"):  # an interrupted build's temporary folder
            shutil.rmtree(leftover, ignore_errors=True)
        return build(name, root, log)
