"""The prepared paper-grid command, at its smoke size on the CPU: it pretrains, sweeps every cut
point and the baseline, appends a timing record per call, and a second call resumes (trains nothing)."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from functions.runs.store import load_results
from functions.core.paths import REPO_ROOT



@pytest.fixture(scope="module")
def paper_gpu():
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))  # it shares machine() with the other benchmarks
    spec = importlib.util.spec_from_file_location("paper_gpu", REPO_ROOT / "benchmarks" / "paper_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(REPO_ROOT / "benchmarks"))


def test_smoke_size_pretrains_sweeps_the_grid_records_its_time_and_resumes(paper_gpu, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(tmp_path))  # restored after the test
    argv = ["--smoke", "--device", "cpu", "--out-root", str(tmp_path)]
    first = paper_gpu.main(argv)
    assert first["pretrained_in_this_call"] and first["complete"]
    assert first["runs_trained"] == first["runs_stored"] == first["runs_in_grid"] == 2 * 8  # 2 fractions x (7 cuts + baseline)
    params, records = load_results(tmp_path / "MNIST/results/paper/results_regular_FR.json")
    assert params["precision"] == "fp32" and params["num_channels"] == 8
    assert sorted({r["sampled_cut_point"] for r in records}) == list(range(7))
    second = paper_gpu.main(argv)
    assert not second["pretrained_in_this_call"] and second["runs_trained"] == 0 and second["complete"]
    history = json.loads((tmp_path / "paper_gpu_timing.json").read_text())
    assert [h["runs_trained"] for h in history] == [16, 0] and history[0]["machine"]["device"] == "cpu"


def test_bad_devices_and_precisions_are_refused_with_the_fix(paper_gpu, tmp_path):
    with pytest.raises(SystemExit, match="bf16 autocasts on a CUDA device"):
        paper_gpu.main(["--smoke", "--device", "cpu", "--precision", "bf16", "--out-root", str(tmp_path)])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device.*--smoke --device cpu"):
            paper_gpu.main(["--out-root", str(tmp_path)])
    with pytest.raises(SystemExit):
        paper_gpu.main(["--precision", "fp16"])
