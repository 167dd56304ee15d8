"""Shared fixtures and the test run's promises: results go to a temporary output root, and the
run leaves every tracked file of the working tree as it found it."""
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
ROOT = Path(__file__).resolve().parent.parent


def _tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode != 0:  # not a git checkout: nothing to compare against
        return []
    return [ROOT / name for name in listed.stdout.decode().split("\0") if name]


def _digests(paths) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for p in paths}


def _copy_of_committed_results() -> Path:
    """A temporary output root holding copies of every study folder's results (the image folders'
    too), the model zoo's and the top-level notebooks' (``.``), so the executed notebooks resume them as they would in the
    repository, and write beside them there."""
    from functions.config import FOLDERS
    from functions.models.zoo_catalog import ZOO_FOLDER
    from functions.notebooks.templates import IMAGE_FOLDERS
    root = Path(tempfile.mkdtemp(prefix="transfer-test-output-"))
    for folder in (*FOLDERS, *IMAGE_FOLDERS, ZOO_FOLDER, "."):
        if (ROOT / folder / "results").is_dir():
            shutil.copytree(ROOT / folder / "results", root / folder / "results")
    return root


def pytest_collection_modifyitems(config, items):
    """Markers by where a test lives: integration tests (command line, servers, sweeps end to end)
    and executed notebooks are ``slow``, notebooks also ``notebook``; ``pytest -m "not slow"`` is
    the unit pass of every subpackage."""
    for item in items:
        path = Path(str(item.path))
        if path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebook)
            item.add_marker(pytest.mark.slow)
        elif "integration" in path.relative_to(ROOT).parts:
            item.add_marker(pytest.mark.slow)


def pytest_configure(config):
    if hasattr(config, "workerinput"):  # an xdist worker inherits the controller's root
        return
    config._tracked_digests = _digests(_tracked_files())
    config._test_output_root = _copy_of_committed_results()
    os.environ["TRANSFER_OUTPUT_ROOT"] = str(config._test_output_root)


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if hasattr(config, "workerinput"):
        return
    shutil.rmtree(config._test_output_root, ignore_errors=True)
    before = config._tracked_digests
    changed = sorted(str(p.relative_to(ROOT)) for p, digest in _digests(before).items() if digest != before[p])
    if changed:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        message = f"the test run changed {len(changed)} tracked file(s): {', '.join(changed)}"
        if reporter:
            reporter.write_line(f"FAILED working tree check: {message}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def mnist_target():
    from functions.data.tasks import load_task
    return load_task("MNIST", [5, 6, 7, 8, 9], 0.1, 42)


@pytest.fixture
def output_root(tmp_path, monkeypatch):
    """Results and source models of a test go to a folder of its own, never into the repository."""
    monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(tmp_path))
    return tmp_path


def pytest_collectstart(collector):
    # nbval compares stderr too; warnings and progress bars there are not results
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("stderr",)


def _paint(root, monkeypatch):
    """Three classes of noisy one-colour 12 x 12 PNGs, 10 each, in ``root/paints``; results and
    features under ``root`` beside them."""
    import numpy as np
    from PIL import Image
    monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(root / "out"))
    monkeypatch.setenv("TRANSFER_FEATURE_CACHE", str(root / "features"))
    rng = np.random.default_rng(0)
    for label, colour in {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}.items():
        (root / "paints" / label).mkdir(parents=True)
        for i in range(10):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "paints" / label / f"{i}.png")
    return root / "paints"


@pytest.fixture
def paints(tmp_path, monkeypatch):
    """A folder of your own images (see :func:`_paint`), for one test."""
    return _paint(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def module_paints(tmp_path_factory):
    """The same folder shared by a module's tests, with their results."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield _paint(tmp_path_factory.mktemp("paints"), monkeypatch)
