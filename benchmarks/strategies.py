"""Fine-tuning strategies benchmark: wall time per run and peak memory of each strategy's sweep
against FR through the engine, and the cost of one training step of LoRA against full fine-tuning.

Sweeps: MNIST regular, quick profile, cut points 0-6 at 5% of the target data, one repeat (7 runs
per mode, no baselines).  Each mode runs in a fresh process of its own, into an empty
output root, one after another.  Memory: the resident memory once data and source model are
loaded, and its peak while the sweep trains (sampled every 10 ms).

Steps: the quick study CNN, batches of 64 and 256 MNIST images, forward + backward + Adam step,
timed over repeated blocks of steps alternating between the networks (median per step): full
fine-tuning (every block and the head train) against LoRA rank 4 on every block (all pretrained
weights frozen; the project's weight-space LoRA, and peft's own LoRA layer), IA3 and BitFit on
every block.

    .venv/bin/python benchmarks/strategies.py    # results/strategies.json
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest.mock import patch

import psutil
import torch
import torch.nn.functional as F

from functions.core.atomic import write_json_atomic
from functions.notebooks.study import plan
from functions.runs.cost import MB, PeakRss
from functions.runs.pretrained import load_pretrained
from functions.runs.sweep import run_sweep
from functions.train import finetune, strategies
from sample_efficiency import machine

OUT = Path(__file__).resolve().parent / "results" / "strategies.json"
MODES = ["FR", "progressive", "discriminative", "lora_r4", "ia3", "bitfit"]
PERCENTAGES, REPEATS, CUTS = [0.05], 1, list(range(7))


def one_mode(mode: str) -> dict:
    """The sweep of one mode in this process (a child of :func:`main`)."""
    setup, cfg, grid = plan("MNIST", None, "quick", mode, PERCENTAGES, REPEATS, CUTS)
    cfg.target_task(), load_pretrained(setup, cfg, log=lambda *_: None)  # loaded before the clock starts
    before = psutil.Process().memory_info().rss / MB
    memory = PeakRss()
    began = time.perf_counter()
    paths = run_sweep(setup, cfg, grid, baselines=False, progress=False, log=lambda *_: None)
    seconds = time.perf_counter() - began
    peak = memory.stop()
    records = json.loads(paths["results"].read_text())[1:]
    return {"mode": mode, "runs": len(records), "seconds": round(seconds, 1),
            "seconds_per_run": round(seconds / len(records), 2), "peak_rss_mb": round(peak, 1),
            "rss_before_training_mb": round(before, 1), "peak_over_start_mb": round(peak - before, 1),
            "mean_test_acc": round(sum(r["test_acc"] for r in records) / len(records), 4)}


def step_costs(batches=(64, 256), steps: int = 15, blocks: int = 7) -> dict:
    """Median milliseconds per training step of each network and batch, in alternating blocks."""
    setup, cfg, _ = plan("MNIST", None, "quick", "F")
    source, task = load_pretrained(setup, cfg, log=lambda *_: None), cfg.target_task()
    tuners = {"full fine-tuning": strategies.finetuner_for(cfg.with_mode("progressive"), source, 0, 5, 0)}
    tuners["full fine-tuning"].unfreeze_layers(tuners["full fine-tuning"].layer_names)
    for mode in ("lora_r4", "ia3", "bitfit"):
        tuners[mode] = strategies.finetuner_for(cfg.with_mode(mode), source, 6, 5, 0)
    with patch.object(finetune, "weight_space_lora", lambda config: config):  # peft's LoRA layer as it is
        tuners["lora_r4, peft's layer"] = strategies.finetuner_for(cfg.with_mode("lora_r4"), source, 6, 5, 0)
    optimisers = {name: torch.optim.Adam(t.param_groups(), lr=1e-3) for name, t in tuners.items()}
    result = {}
    for batch in batches:
        x, y = task.train.x[:batch], task.train.y[:batch]
        times = {name: [] for name in tuners}
        for _ in range(blocks):
            for name, tuner in tuners.items():
                tuner.net.train()
                began = time.perf_counter()
                for _ in range(steps):
                    loss = F.cross_entropy(tuner.net(x), y)
                    optimisers[name].zero_grad(set_to_none=True)
                    loss.backward()
                    optimisers[name].step()
                times[name].append((time.perf_counter() - began) / steps)
        full = statistics.median(times["full fine-tuning"])
        result[f"batch {batch}"] = {
            name: {"ms_per_step": round(1000 * statistics.median(t), 2),
                   "trainable_params": tuners[name].trainable_parameters(),
                   "relative_to_full_fine_tuning": round(statistics.median(t) / full, 2)} for name, t in times.items()}
    return result


def main() -> None:
    rows = []
    for mode in MODES:
        with tempfile.TemporaryDirectory() as root:
            env = {**os.environ, "TRANSFER_OUTPUT_ROOT": root}
            done = subprocess.run([sys.executable, __file__, "--one", mode], env=env, capture_output=True, text=True,
                                  check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    reference = next(r for r in rows if r["mode"] == "FR")
    for row in rows:
        row["time_vs_FR"] = round(row["seconds_per_run"] / reference["seconds_per_run"], 2)
    steps = step_costs()
    result = {"machine": {**machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                          "torch_threads": torch.get_num_threads()},
              "grid": "MNIST regular quick, cuts 0-6, 5%, 1 repeat (7 runs per mode, no baselines)",
              "sweeps": rows, "training_steps": steps,
              "lora_step_not_dearer_than_full_fine_tuning": {
                  batch: row["lora_r4"]["ms_per_step"] <= row["full fine-tuning"]["ms_per_step"]
                  for batch, row in steps.items()}}
    write_json_atomic(OUT, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(one_mode(sys.argv[2])))
    else:
        main()
