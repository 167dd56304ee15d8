"""Where things live: the repository, the data root, the output root and a study folder's results.

Every path of the toolkit is built here, so that ``TRANSFER_DATA_ROOT`` and
``TRANSFER_OUTPUT_ROOT`` move everything they should and nothing else.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """The one data root: ``$TRANSFER_DATA_ROOT`` or ``<repository>/data``."""
    return Path(os.environ.get("TRANSFER_DATA_ROOT", REPO_ROOT / "data")).resolve()


def output_root() -> Path:
    """Where study folders' results and source models go: ``$TRANSFER_OUTPUT_ROOT`` or the repository."""
    return Path(os.environ.get("TRANSFER_OUTPUT_ROOT", REPO_ROOT)).resolve()


def results_dir(folder, profile: str = "quick") -> Path:
    """``<output root>/<Folder>/results``, or ``.../results/<profile>`` for a profile other than
    the quick one (whose files came first and stay where they were); ``folder`` a study folder
    name or any directory."""
    root = output_root() / folder / "results"
    return root if profile == "quick" else root / profile


def figure_path(folder, name: str, profile: str = "quick") -> Path:
    """``<Folder>/results/figures/<name>.png``, under ``results/<profile>`` beside that profile's
    results files for a profile other than the quick one, so that a figure of one profile never
    overwrites the same figure of another."""
    return results_dir(folder, profile) / "figures" / f"{name}.png"
