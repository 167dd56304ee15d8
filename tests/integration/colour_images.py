"""A generated folder of your own images for the command-line tests: three classes (one named
with a space, one with non-ASCII letters) of noisy one-colour PNGs, and an output root that keeps
the tests' results and features apart from the images."""
import numpy as np
import pytest
from PIL import Image

CLASSES = {"red": (200, 30, 30), "green leaves": (30, 200, 30), "blåbär": (30, 30, 200)}


def colour_folder(root, per_class: int = 10, seed: int = 0):
    """``per_class`` noisy 12 x 12 images of one colour per class."""
    rng = np.random.default_rng(seed)
    for label, colour in CLASSES.items():
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


@pytest.fixture
def output_root(tmp_path, monkeypatch):
    """Results under ``out/`` and features under ``features/`` of the test's folder, beside the images."""
    monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(tmp_path / "out"))
    monkeypatch.setenv("TRANSFER_FEATURE_CACHE", str(tmp_path / "features"))
    return tmp_path / "out"
