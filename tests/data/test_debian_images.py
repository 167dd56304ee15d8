"""The image folders built from Debian packages: the class map's choice of files, the folder
written, its fingerprint, refusal of a changed folder, the atomic build and the apt download."""
import hashlib
import io
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from PIL import Image

from functions.core import paths
from functions.core.errors import DataError
from functions.data import catalog, debian, debian_images, sources
from functions.data.catalog import IMAGE_FOLDERS, ImageFolderSpec
from functions.data.files import file_sha256, fingerprint

IMAGE_ROOT = "usr/share/toy/png"


def png(colour, size=(4, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG signature and header claiming a size beyond Pillow's limit (no pixels follow)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


TREE = {  # a package's image folder: path -> bytes
    "animals/birds/a.png": png("red"),
    "animals/birds/dup.png": png("red"),  # the same image again in its class: kept once
    "animals/birds/penguin/b.png": png("green"),  # below a "/**" folder: taken
    "animals/birds/bat.png": png("black"),  # also in tools (same bytes): in neither
    "animals/birds/readme.txt": b"not an image",
    "animals/birds/b.svg": b"<svg/>",
    "animals/birds/fake.png": b"text with a .png suffix",
    "animals/birds/huge.png": huge_png_header(20000, 20000),
    "animals/fish/c.png": png("blue"),  # no class takes this folder
    "tools/hammer.png": png("grey"),
    "tools/HAMMER2.PNG": png("white"),  # the suffix in any case
    "tools/hammer_mirror.png": png("yellow"),  # the package's mirrored copy: skipped
    "tools/bat.png": png("black"),
    "tools/weapons/sword.png": png("purple"),  # "tools" without "/**" takes no subfolder
}
CLASSES = {"birds": ("animals/birds/**",), "tools": ("tools",)}
EXPECTED = {"birds": ["animals/birds/a.png", "animals/birds/penguin/b.png"],
            "tools": ["tools/HAMMER2.PNG", "tools/hammer.png"]}


def toy_spec(**changes) -> ImageFolderSpec:
    fields = dict(name="toy", package="toy-images", version="1:1.0-1", licence="public domain",
                  image_root=IMAGE_ROOT, classes=CLASSES, skip=("*_mirror.png",),
                  counts={"birds": 2, "tools": 2}, fingerprint=expected_fingerprint())
    fields.update(changes)
    return ImageFolderSpec(**fields)


def expected_fingerprint() -> str:
    entries = [(f"{label}/{rel.replace('/', '__')}", label, "", hashlib.sha256(TREE[rel]).hexdigest())
               for label, rels in EXPECTED.items() for rel in rels]
    return fingerprint(entries)


def write_tree(base: Path) -> Path:
    for rel, content in TREE.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(content)
    return base


# ----------------------------------------------------------------------------- the fingerprint

def test_fingerprint_is_sha256_over_the_sorted_lines(tmp_path):
    entries = [("b/2.png", "b", "", "ff" * 32), ("a/1.png", "a", "test", "00" * 32)]
    lines = sorted(f"{p}\t{label}\t{split}\t{digest}\n" for p, label, split, digest in entries)
    assert fingerprint(entries) == hashlib.sha256("".join(lines).encode()).hexdigest()
    assert fingerprint(reversed(entries)) == fingerprint(entries)
    assert fingerprint([("a/1.png", "b", "test", "00" * 32), entries[0]]) != fingerprint(entries)  # relabelled
    assert fingerprint([("a/1.png", "a", "train", "00" * 32), entries[0]]) != fingerprint(entries)  # moved split
    assert fingerprint([]) == hashlib.sha256(b"").hexdigest()
    image = tmp_path / "x.png"
    image.write_bytes(png("red"))
    assert file_sha256(image) == hashlib.sha256(png("red")).hexdigest()


def test_fingerprint_refuses_fields_that_would_make_lines_ambiguous():
    with pytest.raises(DataError, match="tab or line break"):
        fingerprint([("a\tb.png", "a", "", "00" * 32)])


# ----------------------------------------------------------------------------- the class map

def test_class_map_selects_folders_skips_copies_and_duplicates(tmp_path):
    tree = write_tree(tmp_path / "tree")
    assert debian_images.class_files(tree, toy_spec()) == EXPECTED


def test_an_image_in_two_classes_by_path_belongs_to_neither(tmp_path):
    tree = write_tree(tmp_path / "tree")
    spec = toy_spec(classes={"animals": ("animals/**",), "birds": ("animals/birds",)})
    chosen = debian_images.class_files(tree, spec)
    assert chosen == {"animals": ["animals/birds/penguin/b.png", "animals/fish/c.png"], "birds": []}


def test_folder_is_written_with_unchanged_bytes_and_stable_names(tmp_path):
    tree = write_tree(tmp_path / "tree")
    debian_images.write_folder(tree, EXPECTED, tmp_path / "out")
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == ["birds/animals__birds__a.png", "birds/animals__birds__penguin__b.png",
                       "tools/tools__HAMMER2.PNG", "tools/tools__hammer.png"]
    assert (tmp_path / "out/birds/animals__birds__penguin__b.png").read_bytes() == TREE["animals/birds/penguin/b.png"]
    assert debian_images.folder_entries(tmp_path / "out")[0] == (
        "birds/animals__birds__a.png", "birds", "", hashlib.sha256(TREE["animals/birds/a.png"]).hexdigest())


def test_catalog_class_maps_share_their_labels_and_counts_cover_them():
    clipart, stamps = IMAGE_FOLDERS["clipart"], IMAGE_FOLDERS["stamps"]
    assert set(clipart.classes) == set(stamps.classes) == set(clipart.counts) == set(stamps.counts)
    assert len(clipart.classes) >= 8 and min(stamps.counts.values()) >= 10 and min(clipart.counts.values()) >= 10
    assert catalog.dataset_names()[-2:] == ["clipart", "stamps"]
    assert set(catalog.SPECS) < set(catalog.dataset_names())


# ----------------------------------------------------------------------------- the build

@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A data root whose sources hold a real .deb of the toy tree; the catalog knows ``toy``."""
    spec = toy_spec()
    monkeypatch.setitem(IMAGE_FOLDERS, "toy", spec)
    package = tmp_path / "package"
    write_tree(package / IMAGE_ROOT)
    (package / "DEBIAN").mkdir()
    (package / "DEBIAN" / "control").write_text(
        f"Package: {spec.package}\nVersion: {spec.version}\nArchitecture: all\nMaintainer: nobody <nobody@example.org>\n"
        f"Description: toy images\n")
    root = tmp_path / "data"
    deb = debian_images.deb_path(spec, root)
    deb.parent.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Znone", "--build", str(package), str(deb)],
                   check=True, capture_output=True)
    return root


def test_prepare_builds_the_folder_from_the_kept_deb_and_a_rerun_does_nothing(toy, monkeypatch):
    logged = []
    assert sources.prepare("toy", toy, log=logged.append) == toy
    folder = toy / "toy"
    assert sorted(p.name for p in folder.iterdir()) == ["birds", "tools"]
    assert debian_images.folder_entries(folder) and logged[-1].startswith("toy: 4 images in 2 classes")
    assert [p.name for p in toy.iterdir() if p.name.startswith(".")] == []  # no temporary folder left
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    monkeypatch.setattr(debian_images, "unpack", lambda *a: pytest.fail("a complete folder was rebuilt"))
    monkeypatch.setattr(debian_images, "apt_download", lambda *a: pytest.fail("the kept .deb was downloaded again"))
    sources.prepare("toy", toy, log=logged.append)
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before


@pytest.mark.parametrize("tamper", ["add", "remove", "change", "relabel"])
def test_a_changed_folder_is_refused_with_the_command_that_rebuilds_it(toy, tamper):
    sources.prepare("toy", toy, log=lambda _: None)
    folder = toy / "toy"
    image = folder / "birds" / "animals__birds__a.png"
    if tamper == "add":
        (folder / "birds" / "extra.png").write_bytes(png("orange"))
    elif tamper == "remove":
        image.unlink()
    elif tamper == "change":
        image.write_bytes(png("orange"))
    else:
        image.rename(folder / "tools" / image.name)
    with pytest.raises(DataError, match=r"does not match its catalog fingerprint .*prepare-data toy") as err:
        sources.prepare("toy", toy, log=lambda _: None)
    assert ("counts match" in str(err.value)) == (tamper == "change")
    assert folder.is_dir()  # refused, never deleted


def test_a_build_whose_fingerprint_differs_leaves_nothing(toy, monkeypatch):
    monkeypatch.setitem(IMAGE_FOLDERS, "toy", toy_spec(fingerprint="0" * 64))
    with pytest.raises(DataError, match=r"toy-images_1%3a1.0-1_all.deb is not the package .*prepare-data toy"):
        sources.prepare("toy", toy, log=lambda _: None)
    assert sorted(p.name for p in toy.iterdir()) == ["sources"]


def test_an_interrupted_build_leaves_no_folder_and_its_leftover_is_cleared(toy, monkeypatch):
    copied, copy = [], shutil.copyfile

    def copy_then_fail(src, dst):
        if copied:
            raise KeyboardInterrupt
        copied.append(copy(src, dst))

    monkeypatch.setattr(debian_images.shutil, "copyfile", copy_then_fail)
    with pytest.raises(KeyboardInterrupt):
        sources.prepare("toy", toy, log=lambda _: None)
    assert sorted(p.name for p in toy.iterdir()) == ["sources"]
    monkeypatch.undo()
    monkeypatch.setitem(IMAGE_FOLDERS, "toy", toy_spec())
    (toy / ".toy-killed").mkdir()  # what a killed build leaves
    sources.prepare("toy", toy, log=lambda _: None)
    assert sorted(p.name for p in toy.iterdir()) == ["sources", "toy"]


def test_a_corrupt_deb_is_named_with_the_fix(toy):
    deb = debian_images.deb_path(toy_spec(), toy)
    deb.write_bytes(deb.read_bytes()[:200])
    with pytest.raises(DataError, match=r"dpkg -x .* failed .*delete it and rerun"):
        sources.prepare("toy", toy, log=lambda _: None)
    assert sorted(p.name for p in toy.iterdir()) == ["sources"]


# ----------------------------------------------------------------------------- the download

def fake_apt(tmp_path, monkeypatch, script: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text("#!/bin/sh\n" + script)
    (bin_dir / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_download_retries_after_updating_the_package_lists(tmp_path, monkeypatch):
    lists = tmp_path / "lists"
    fake_apt(tmp_path, monkeypatch, f"""
case "$1" in
  update) touch {lists} ;;
  download) [ -e {lists} ] || {{ echo "E: Unable to locate package $2" >&2; exit 100; }}
            touch "toy_1.0_all.deb" ;;
esac
""")
    into = tmp_path / "into"
    into.mkdir()
    assert debian.apt_download("toy=1.0", into, "fix it") == into / "toy_1.0_all.deb"


def test_a_failed_download_names_the_command_and_the_fix(tmp_path, monkeypatch):
    fake_apt(tmp_path, monkeypatch, 'echo "E: Version \'9\' for \'toy\' was not found" >&2; exit 100\n')
    with pytest.raises(DataError, match=r"`apt-get download toy=9` failed \(E: Version '9' .*\); copy the deb"):
        debian.apt_download("toy=9", tmp_path, "copy the deb")


# ----------------------------------------------------------------------------- the real packages

@pytest.mark.slow
@pytest.mark.parametrize("name", ["clipart", "stamps"])
def test_the_real_build_matches_the_catalog(name, tmp_path, monkeypatch, capsys):
    from functions.__main__ import main
    spec = IMAGE_FOLDERS[name]
    deb = debian_images.deb_path(spec, paths.data_root())
    if not deb.is_file():
        pytest.skip(f"{deb.name} is not under the data root (`python -m functions prepare-data {name}` fetches it)")
    (tmp_path / "sources").mkdir()
    os.symlink(deb, debian_images.deb_path(spec, tmp_path))
    monkeypatch.setenv("TRANSFER_DATA_ROOT", str(tmp_path))
    assert main(["prepare-data", name]) == 0
    assert capsys.readouterr().out.endswith(f"{name}: ready\n")
    folder = tmp_path / name
    counts = {label.name: sum(1 for _ in label.iterdir()) for label in folder.iterdir()}
    assert counts == spec.counts
    assert fingerprint(debian_images.folder_entries(folder)) == spec.fingerprint
