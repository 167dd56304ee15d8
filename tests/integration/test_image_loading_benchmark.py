"""The image-loading benchmark at a tiny size, as a command: it runs both sides, appends one
record with the machine and the load to its results file, and both sides give the same pixels."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from functions.core.paths import REPO_ROOT


def drawings(root, per_class: int = 4):
    """Transparent drawings (RGBA, alpha 0..255) and an opaque image in two classes."""
    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8), "RGBA").save(root / label / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(root / label / "opaque.png")
    return root


@pytest.mark.slow  # two processes, each starting DataLoader workers
def test_the_benchmark_runs_and_appends_its_record(tmp_path):
    folder, out = drawings(tmp_path / "drawings"), tmp_path / "image_loading.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TRANSFER_DATA_ROOT": str(tmp_path / "data")}
    argv = [sys.executable, "benchmarks/image_loading.py", "--data", str(folder), "--sizes", "8", "--runs", "2",
            "--out", str(out), "--note", "smoke"]
    for _ in range(2):
        done = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    records = json.loads(out.read_text())["records"]
    assert len(records) == 2
    record = records[0]
    assert {"cpu", "cores", "cpu_capability", "torch", "load_average_at_start"} <= set(record["machine"])
    assert record["note"] == "smoke" and len(record["load_average_at_end"]) == 3
    (size,) = record["sizes"]
    assert size["size"] == 8 and size["images"] == 10
    assert len(size["ours_seconds"]) == len(size["theirs_seconds"]) == 2
    for key in ("ours_first_read", "ours_warm_median", "theirs_median_pass", "grid_speedup",
                "first_read_over_one_pass", "target_grid_speedup_met", "target_first_read_met"):
        assert key in size
    assert size["identical_images_on_white"] == 10  # the same resize and white compositing as ImageFolder's
    assert size["identical_images"] == 2  # the opaque ones; the default loader drops the alpha channel
