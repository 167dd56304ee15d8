"""The upstream paper grid on one GPU: MNIST regular, mode FR, the ``paper`` profile in full.

Pretraining (64 channels, batch 4096, up to 40 epochs), then the baselines and cut points 0-6 at
0.1%, 1%, 10%, 50% and 100% of the target data with the upstream repeats (25, 25, 20, 5, 5):
1,120 runs through the engine on one CUDA device.  The sweep resumes, so a call cut short by a
time limit loses at most the cell in flight: run the same command again.  Every call appends a
timing record (device, precision, seconds for pretraining and for the sweep, runs trained,
accuracies so far) to ``benchmarks/results/paper_gpu_<precision>.json``.

    .venv/bin/python benchmarks/paper_gpu.py                      # fp32: MNIST/results/paper/
    .venv/bin/python benchmarks/paper_gpu.py --precision bf16     # bf16: under benchmarks/results/bf16/
    .venv/bin/python benchmarks/paper_gpu.py --smoke --device cpu --out-root /tmp/paper   # seconds, any machine

``--smoke`` runs the same steps on a small network, one repeat of 0.1% and 1% and two epochs:
what to time first on a GPU machine, and what the tests run on the CPU.  bf16 results go to
their own tree, so that they sit beside the fp32 ones instead of being refused by them.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path

import torch

from functions.analysis.summary import records_frame, summary_table
from functions.config import PRECISIONS, Grid
from functions.core.atomic import write_json_atomic
from functions.core.paths import REPO_ROOT
from functions.notebooks.study import plan
from functions.runs.pretrained import load_pretrained, pretrained_path
from functions.runs.store import load_results, results_path
from functions.runs.sweep import run_sweep
from sample_efficiency import machine

RESULTS = Path(__file__).resolve().parent / "results"
SMOKE = dict(num_channels=8, batch_size=256, num_train=2, num_train_pretrain=1, early_stop_patience=2)


def experiment(smoke: bool, precision: str):
    """The setup, config and grid of the paper grid (or its smoke size) in ``precision``."""
    setup, cfg, grid = plan("MNIST", "regular", "paper", "FR")
    cfg = cfg.replace(precision=precision)
    if smoke:
        cfg = cfg.replace(**SMOKE)
        grid = Grid((0.001, 0.01), grid.cut_points, {0.001: 1, 0.01: 1}, grid.profile)
    return setup, cfg, grid


def _device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: this machine has no CUDA device; the paper grid is meant for a GPU "
                         f"machine (on a CPU, check the command with --smoke --device cpu)")
    return device


def _stored(paths) -> int:
    return sum(len(load_results(p)[1]) for p in paths if Path(p).exists())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="torch device (default: cuda, the first GPU)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp32, or bf16 autocast (CUDA only)")
    parser.add_argument("--smoke", action="store_true", help="small network, two cells per cut point: seconds")
    parser.add_argument("--out-root", type=Path, help="output root for the source model, results files and "
                                                       "timing record (default: the repository; bf16: "
                                                       "benchmarks/results/bf16)")
    args = parser.parse_args(argv)
    device = _device(args.device)
    if args.precision == "bf16" and device.type != "cuda":
        raise SystemExit("--precision bf16 autocasts on a CUDA device; on a CPU use fp32")
    root = args.out_root or (RESULTS / "bf16" if args.precision == "bf16" else REPO_ROOT)
    os.environ["TRANSFER_OUTPUT_ROOT"] = str(Path(root).resolve())
    setup, cfg, grid = experiment(args.smoke, args.precision)
    timing = (Path(root) / "paper_gpu_timing.json" if args.out_root or args.smoke
              else RESULTS / f"paper_gpu_{args.precision}.json")

    began = time.perf_counter()
    had_source = pretrained_path(setup, cfg).exists()
    load_pretrained(setup, cfg, log=print, device=device)
    pretrain_s = time.perf_counter() - began
    before = _stored([results_path(setup.folder, "baselines", setup.name, profile=grid.profile),
                      results_path(setup.folder, "results", setup.name, cfg.mode, grid.profile)])
    began = time.perf_counter()
    paths = run_sweep(setup, cfg, grid, device=device, progress=not args.smoke, log=print)
    sweep_s = time.perf_counter() - began
    stored = _stored(paths.values())
    total = sum(grid.repeats_for(p) for p in grid.percentages) * (len(grid.cut_points) + 1)  # + baseline
    summary = summary_table(records_frame(*paths.values()))
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine(), "device": str(device),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "smoke": args.smoke, "precision": args.precision,
        "pretrain_s": round(pretrain_s, 1), "pretrained_in_this_call": not had_source,
        "sweep_s": round(sweep_s, 1), "runs_trained": stored - before, "runs_stored": stored, "runs_in_grid": total,
        "complete": stored == total, "results": {kind: str(p) for kind, p in paths.items()},
        "test_acc": json.loads(summary.to_json(orient="index")),
    }
    history = json.loads(timing.read_text()) if timing.exists() else []
    write_json_atomic(timing, [*history, record])
    print(summary.to_string())
    print(f"pretraining {pretrain_s:.0f} s, sweep {sweep_s:.0f} s, {stored - before} runs trained, "
          f"{stored} of {total} stored; timing appended to {timing}")
    return record


if __name__ == "__main__":
    main()
