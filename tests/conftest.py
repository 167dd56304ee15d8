"""Shared fixtures: the real MNIST target task (prepared by `make data`) and an isolated output root."""
import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def mnist_target():
    from functions.data.tasks import load_task
    return load_task("MNIST", [5, 6, 7, 8, 9], 0.1, 42)


@pytest.fixture
def output_root(tmp_path, monkeypatch):
    """Results and source models of a test go to a temporary folder, never into the repository."""
    monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(tmp_path))
    return tmp_path


def pytest_collectstart(collector):
    # nbval compares stderr too; warnings and progress bars there are not results
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("stderr",)
