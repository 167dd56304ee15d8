"""Sweep benchmark: a conventional training loop against the engine, on the study's MNIST grid.

Grid: MNIST regular FR (source MNIST 0-4, target 5-9), cut points 0-6 and the baseline,
percentages 0.001 and 0.01, 2 repeats, 5 epochs with a validation pass each (patience 6: no
early stop), the paper network (depth 6, 64 channels, batch 4096).  Both paths train the same
runs (same initial weights, subsets and number of Adam steps) in one process:

* reference: a torchvision ``MNIST`` dataset with per-image ``ToTensor + Normalize`` behind
  ``DataLoader``s, the whole network run forward every epoch, the training set evaluated every
  epoch, one run after another;
* engine: frozen prefixes computed once per cut point (:func:`functions.train.engine.staged_inputs`),
  the repeats of a cell trained together (:func:`functions.train.engine.fit_group`).

Cut points alternate between the two paths, so that load from other processes falls on both.
Results: ``benchmarks/results/sweep_<device>.json``; the measured numbers are in docs/explanation/engine.md.

    .venv/bin/python benchmarks/sweep_benchmark.py            # full grid
    .venv/bin/python benchmarks/sweep_benchmark.py --smoke    # seconds; writes nothing
    .venv/bin/python benchmarks/sweep_benchmark.py --memory   # peak memory, paper grid
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets, transforms

from functions.core.device import configure_threads
from functions.models import study_cnn as models
from functions.train import engine
from functions.config import Config, Grid as SweepGrid, get_setup, profile
from functions.core.paths import data_root
from functions.data.catalog import spec
from functions.data.tasks import Split, balanced_subset, subset_seed
from functions.core.atomic import write_json_atomic
from functions.runs.pretrained import load_pretrained
from functions.runs.store import BASELINE_CUT
from functions.runs.sweep import run_seed, run_sweep

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Grid:
    cut_points: tuple
    percentages: tuple
    repeats: int
    eval_limit: int | None  # smoke: only the first images of validation and test


PAPER = Grid(cut_points=(0, 1, 2, 3, 4, 5, 6), percentages=(0.001, 0.01), repeats=2, eval_limit=None)
SMOKE = Grid(cut_points=(0, 1, 2), percentages=(0.001,), repeats=2, eval_limit=64)


@dataclass
class Tally:
    """Time and work of one path."""

    wall: float = 0.0
    cpu: float = 0.0
    flops: float = 0.0
    images: int = 0  # protocol images: training steps, validation passes, final train/val/test
    test_accs: list = field(default_factory=list)
    per_cut: dict = field(default_factory=dict)

    def timed(self, key, fn):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        self.wall, self.cpu = self.wall + wall, self.cpu + cpu
        label = "baseline" if key == BASELINE_CUT else f"cut {key}"
        self.per_cut[label] = round(self.per_cut.get(label, 0.0) + wall, 3)
        return out

    def row(self, device: str, path: str) -> dict:
        return {"device": device, "path": path, "wall_s": round(self.wall, 2), "cpu_s": round(self.cpu, 2),
                "cpu_share": round(self.cpu / self.wall, 2), "images_per_s": round(self.images / self.wall, 1),
                "gflop": round(self.flops / 1e9, 1), "gflop_per_s": round(self.flops / 1e9 / self.wall, 2),
                "mean_test_acc": round(float(np.mean(self.test_accs)), 5), "runs": len(self.test_accs),
                "wall_s_per_cut": self.per_cut}


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def forward_flops(model: models.StudyCNN, start: int, in_shape: tuple) -> int:
    with torch.no_grad():
        return count_flops(lambda: model.forward_from(torch.zeros(1, *in_shape), start))


def train_flops(model: models.StudyCNN, start: int, in_shape: tuple) -> int:
    """Forward and backward of one image (autograd skips frozen blocks' backward)."""
    copy_ = copy.deepcopy(model)
    return count_flops(lambda: F.cross_entropy(copy_.forward_from(torch.zeros(1, *in_shape), start),
                                               torch.zeros(1, dtype=torch.long)).backward())


# ----------------------------------------------------------------------------- the conventional loop

class TargetMNIST:
    """The task's splits as torchvision datasets: rows of the official files, per-image transforms."""

    def __init__(self, cfg: Config, eval_limit: int | None):
        norm = transforms.Compose([transforms.ToTensor(), transforms.Normalize(spec("MNIST").mean, spec("MNIST").std)])
        lookup = {c: i for i, c in enumerate(cfg.fine_tune_classes)}
        relabel = lookup.__getitem__
        train = datasets.MNIST(data_root(), train=True, transform=norm, target_transform=relabel)
        test = datasets.MNIST(data_root(), train=False, transform=norm, target_transform=relabel)
        keep = np.flatnonzero(np.isin(train.targets.numpy(), cfg.fine_tune_classes))
        order = torch.randperm(len(keep), generator=torch.Generator().manual_seed(cfg.generate_dataset_seed)).numpy()
        n_val = int(round(cfg.val_split * len(keep)))
        self.train_rows = keep[order[n_val:]]
        val_rows = keep[order[:n_val]][:eval_limit]
        test_rows = np.flatnonzero(np.isin(test.targets.numpy(), cfg.fine_tune_classes))[:eval_limit]
        self.train, self.val, self.test = train, Subset(train, val_rows), Subset(test, test_rows)

    def subset(self, index: torch.Tensor) -> Subset:
        return Subset(self.train, self.train_rows[index.numpy()])


@torch.no_grad()
def evaluate(model, loader) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += (model(x).argmax(1) == y).sum().item()
        total += len(y)
    return correct / total


def reference_run(model, train_set, val_set, test_set, cfg: Config, seed: int) -> dict:
    """Train as a textbook loop does: everything through DataLoaders, the whole network each step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr_fine_tune)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    train_eval, val_loader, test_loader = (DataLoader(s, batch_size=cfg.batch_size) for s in (train_set, val_set, test_set))
    best_val, best_state, stale, epochs = -1.0, copy.deepcopy(model.state_dict()), 0, 0
    for _ in range(cfg.num_train):
        epochs += 1
        model.train()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        evaluate(model, train_eval)  # logged every epoch by the conventional loop
        val_acc = evaluate(model, val_loader)
        if val_acc > best_val:
            best_val, best_state, stale = val_acc, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= cfg.early_stop_patience:
                break
    model.load_state_dict(best_state)
    return {"train_acc": evaluate(model, train_eval), "val_acc": evaluate(model, val_loader),
            "test_acc": evaluate(model, test_loader), "epochs": epochs}


# ----------------------------------------------------------------------------- the benchmark

def _best_rate(flops: float, work, repeats: int) -> float:
    """GFLOP/s of ``work`` at its fastest of ``repeats`` timed calls, after one warm-up call."""
    work()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - t)
    return flops / best / 1e9


def matmul_peak_gflops(size: int = 4096, repeats: int = 5) -> float:
    """torch's fp32 matrix product (MKL's sgemm); on AMD processors MKL does not take its fastest
    path, so this undershoots what the processor does: kept for comparison only."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return _best_rate(2 * size ** 3, lambda: a @ b, repeats)


@torch.no_grad()
def convolution_peak_gflops(smoke: bool, repeats: int = 5) -> dict:
    """The engine's own kernel at its most favourable shapes: 3x3 convolutions of the paper
    network's width (64 to 64 channels, 28x28 and 14x14, channels-last, the layout the engine
    trains in) through oneDNN, as torch's CPU convolution runs them, over batches from
    cache-sized to large.  The best shape's rate is what the engine's convolutions can approach."""
    channels, batches, sides = (8, (16,), (28,)) if smoke else (64, (16, 64, 256), (28, 14))
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(memory_format=torch.channels_last)
    rates = {}
    for side in sides:
        for batch in batches:
            x = torch.randn(batch, channels, side, side).contiguous(memory_format=torch.channels_last)
            flops = 2 * batch * side * side * channels * channels * 9
            rates[f"{batch}x{channels}x{side}x{side}"] = round(_best_rate(flops, lambda: conv(x), repeats), 1)
    best = max(rates, key=rates.get)
    return {"gflop_per_s": rates[best], "best_shape": best, "per_shape": rates}


def fma_bound_gflops() -> dict:
    """The processor's arithmetic bound: cores x clock x 2 FMA pipes x fp32 lanes x 2 flops.

    Lanes come from the instruction set (16 with AVX-512, 8 with AVX2); two FMA pipes per core is
    what current AMD and Intel server cores have; the clock is the highest this machine reports
    (``cpuinfo_max_freq``, else ``cpu MHz``, which in a VM is the nominal clock: boost can exceed it)."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    max_freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if max_freq.exists():
        mhz, source = int(max_freq.read_text()) / 1000, "cpuinfo_max_freq"
    else:
        mhz = max((float(line.split(":", 1)[1]) for line in cpuinfo.splitlines() if line.startswith("cpu MHz")),
                  default=float("nan"))
        source = "/proc/cpuinfo cpu MHz"
    cores = len(os.sched_getaffinity(0))
    return {"gflop_per_s": round(cores * mhz / 1000 * 2 * lanes * 2, 1), "cores": cores, "clock_mhz": mhz,
            "clock_source": source, "fp32_lanes": lanes, "fma_pipes_per_core": 2}


def physical_limits(smoke: bool) -> dict:
    """What the engine's rate is compared with.  ``reference`` is the larger of the best
    convolution rate measured and the FMA bound: the engine runs those same convolutions on less
    favourable shapes, with their backward passes and other work in between, so its rate stays
    under the reference; the matmul rate is reported beside them."""
    convolution, fma = convolution_peak_gflops(smoke), fma_bound_gflops()
    return {"convolution": convolution, "fma_bound": fma,
            "matmul_gflop_per_s": round(matmul_peak_gflops(1024 if smoke else 4096), 1),
            "reference_gflop_per_s": max(convolution["gflop_per_s"], fma["gflop_per_s"])}


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model_name = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                      platform.processor())
    return {"cpu": model_name, "cores": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "gpu": None}


def build_model(pretrained, cfg, cut_point, num_classes, in_shape, seed):
    if cut_point == BASELINE_CUT:
        return models.build(cfg, in_shape, num_classes, seed)
    return models.cut(pretrained, cut_point, cfg, num_classes, seed)


def benchmark_config(smoke: bool, pretrain_epochs: int) -> Config:
    if smoke:
        return Config(depth=2, num_channels=4, batch_size=64, num_train=2, early_stop_patience=3)
    return Config(num_train=5, early_stop_patience=6, num_train_pretrain=pretrain_epochs)


def run(smoke: bool, pretrain_epochs: int, cut_points: tuple | None = None) -> dict:
    configure_threads()
    grid = SMOKE if smoke else PAPER
    if cut_points is not None:
        grid = Grid(tuple(sorted(cut_points)), grid.percentages, grid.repeats, grid.eval_limit)
    setup = get_setup("MNIST", "regular")
    cfg = benchmark_config(smoke, pretrain_epochs)
    load = {"before": [round(x, 2) for x in os.getloadavg()], "during": []}  # 1-minute load after each cut
    limits = physical_limits(smoke)
    task = cfg.target_task()
    val, test = (Split(s.x[:grid.eval_limit], s.y[:grid.eval_limit]) for s in (task.val, task.test))
    in_shape, k = tuple(task.train.x.shape[1:]), task.num_classes
    # the weights of the source model do not affect timing: smoke uses an untrained one
    pretrained = models.build(cfg, in_shape, len(cfg.pre_train_classes), 0) if smoke else load_pretrained(setup, cfg)
    reference_data = TargetMNIST(cfg, grid.eval_limit)
    if not torch.equal(torch.as_tensor([reference_data.train.targets[i] for i in reference_data.train_rows[:50]]),
                       torch.as_tensor(cfg.fine_tune_classes)[task.train.y[:50]]):
        raise RuntimeError("the reference dataset and load_task disagree on the training rows")

    cells = [(p, r, balanced_subset(task.train.y, k, p, subset_seed(cfg.generate_dataset_seed, p, r)))
             for p in grid.percentages for r in range(grid.repeats)]
    rows = torch.unique(torch.cat([index for _, _, index in cells]))
    train_rows = task.train.subset(rows)
    ref, eng = Tally(), Tally()
    accuracy_pairs = []

    def reference(cut_point):
        results = []
        for p, r, index in cells:
            seed = run_seed(cfg.generate_dataset_seed, p, cut_point, r)
            model = build_model(pretrained, cfg, cut_point, k, in_shape, seed)
            out = ref.timed(cut_point, lambda: reference_run(model, reference_data.subset(index), reference_data.val,
                                                              reference_data.test, cfg, seed))
            full_fwd, full_train = forward_flops(model, 0, in_shape), train_flops(model, 0, in_shape)
            n = len(index)
            ref.flops += out["epochs"] * (n * full_train + (n + len(val)) * full_fwd) + (n + len(val) + len(test)) * full_fwd
            ref.images += out["epochs"] * (n + len(val)) + n + len(val) + len(test)
            ref.test_accs.append(out["test_acc"])
            results.append(out["test_acc"])
        return results

    def engine_cells(cut_point, start, splits):
        results = []
        train_split, val_split, test_split = splits
        for p in grid.percentages:
            group = [(r, index) for q, r, index in cells if q == p]
            seeds = [run_seed(cfg.generate_dataset_seed, p, cut_point, r) for r, _ in group]
            group_models = [build_model(pretrained, cfg, cut_point, k, in_shape, s) for s in seeds]
            trains = [train_split.view(torch.searchsorted(rows, index)) for _, index in group]
            done = eng.timed(cut_point, lambda: engine.fit_group(
                group_models, trains, val_split, test_split, lr=cfg.lr_fine_tune, max_epochs=cfg.num_train,
                patience=cfg.early_stop_patience, batch_size=cfg.batch_size, seeds=seeds, start=start))
            shape = tuple(train_split.x.shape[1:])
            fwd, step = forward_flops(group_models[0], start, shape), train_flops(group_models[0], start, shape)
            for result in done:
                n = result.n_train
                eng.flops += result.epochs * (n * step + len(val) * fwd) + (n + len(test)) * fwd
                eng.images += result.epochs * (n + len(val)) + n + len(val) + len(test)
                eng.test_accs.append(result.test_acc)
                results.append(result.test_acc)
        return results

    def progress(cut_point):
        label = "baseline" if cut_point == BASELINE_CUT else f"cut {cut_point}"
        load["during"].append(round(os.getloadavg()[0], 2))
        print(f"{label:>8}: reference {ref.per_cut[label]:7.1f} s, engine {eng.per_cut[label]:7.1f} s "
              f"(load {load['during'][-1]:.1f})", flush=True)

    # baseline first, then each cut point; the engine's staging of the prefix is timed with it
    accuracy_pairs += zip(reference(BASELINE_CUT), engine_cells(BASELINE_CUT, 0, [train_rows, val, test]))
    progress(BASELINE_CUT)
    stages = engine.staged_inputs(pretrained, [train_rows, val, test], grid.cut_points, frozen=cfg.freeze,
                                  device="cpu")
    level, level_shape = 0, in_shape
    for cut_point in grid.cut_points:
        _, start, splits = eng.timed(cut_point, lambda: next(stages))
        if start > level:  # each staged block ran once over every kept image
            eng.flops += sum(len(s) for s in splits) * count_flops(
                lambda: pretrained.features(torch.zeros(1, *level_shape), level, start).detach())
            level, level_shape = start, tuple(splits[0].x.shape[1:])
        accuracy_pairs += zip(engine_cells(cut_point, start, splits), reference(cut_point))
        progress(cut_point)

    load["after"] = [round(x, 2) for x in os.getloadavg()]
    differences = [abs(a - b) for a, b in accuracy_pairs]
    busiest = max(load["before"][0], load["after"][0], *load["during"])
    busy = busiest > len(os.sched_getaffinity(0)) + 0.5  # this process alone keeps every core busy
    return {
        "benchmark": "MNIST regular FR sweep: conventional loop vs engine",
        "smoke": smoke,
        "grid": {"cut_points": list(grid.cut_points), "baseline": True, "percentages": list(grid.percentages),
                 "repeats": grid.repeats, "epochs": cfg.num_train, "patience": cfg.early_stop_patience,
                 "validation_images": len(val), "test_images": len(test),
                 "train_images_per_run": sorted({len(index) for _, _, index in cells})},
        "config": cfg.params(),
        "source_model": ("untrained (smoke)" if smoke else
                         f"paper architecture trained for {cfg.num_train_pretrain} epoch(s); "
                         f"its weights do not affect timing"),
        "machine": machine(),
        "physical_limits": limits,
        "load_average": load,
        "contention": (f"busy: other processes shared the {len(os.sched_getaffinity(0))} cores (1-minute load "
                       f"up to {busiest}); cut points alternate between the paths so both met it, and cpu_s "
                       f"counts only this process's time" if busy else "quiet"),
        "rows": [ref.row("cpu", "reference"), eng.row("cpu", "engine"),
                 {"device": "cuda", "path": "reference", "wall_s": None},
                 {"device": "cuda", "path": "engine", "wall_s": None}],
        "speedup": {"cpu": {"wall": round(ref.wall / eng.wall, 2), "cpu_time": round(ref.cpu / eng.cpu, 2)},
                    "cuda": None},
        "engine_share_of": {"reference": round(eng.flops / 1e9 / eng.wall / limits["reference_gflop_per_s"], 3),
                            "convolution_peak": round(eng.flops / 1e9 / eng.wall / limits["convolution"]["gflop_per_s"], 3),
                            "fma_bound": round(eng.flops / 1e9 / eng.wall / limits["fma_bound"]["gflop_per_s"], 3)},
        "test_acc_difference": {"mean": round(float(np.mean(differences)), 5),
                                "max": round(float(np.max(differences)), 5)},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "notes": ["images_per_s counts protocol images (training steps, validation passes, final "
                  "train/val/test passes), the same for both paths",
                  "gflop counts the work each path did (FlopCounterMode per image, times images)",
                  "the reference evaluates with batch_size-sized DataLoader batches and also evaluates the "
                  "training set every epoch; peak_rss_mb is the whole process (both paths)"],
    }


def profile_engine(smoke: bool) -> dict:
    """Where the engine's time goes in the costliest cell: the baseline, whole network trainable,
    at the larger percentage (nothing to cache, so the protocol's passes set the cost)."""
    configure_threads()
    grid, cfg = SMOKE if smoke else PAPER, benchmark_config(smoke, 1)
    task = cfg.target_task()
    val, test = (Split(s.x[:grid.eval_limit], s.y[:grid.eval_limit]) for s in (task.val, task.test))
    p = grid.percentages[-1]
    trains = [task.train.subset(balanced_subset(task.train.y, task.num_classes, p,
                                                subset_seed(cfg.generate_dataset_seed, p, r)))
              for r in range(grid.repeats)]
    seeds = [run_seed(cfg.generate_dataset_seed, p, BASELINE_CUT, r) for r in range(grid.repeats)]
    group = [models.build(cfg, tuple(task.train.x.shape[1:]), task.num_classes, s) for s in seeds]
    load_before = os.getloadavg()[0]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        results = engine.fit_group(group, trains, val, test, lr=cfg.lr_fine_tune, max_epochs=cfg.num_train,
                                   patience=cfg.early_stop_patience, batch_size=cfg.batch_size, seeds=seeds)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]
    n, epochs = len(trains[0]), results[0].epochs
    passes = {"validation passes": epochs * len(val), "final test pass": len(test),
              "training steps (forward + backward, about 3 forwards)": 3 * epochs * n, "final train pass": n}
    return {
        "profile": "engine, baseline cell (whole network trainable)", "smoke": smoke,
        "cell": {"percentage": p, "repeats": grid.repeats, "train_images": n, "epochs": epochs,
                 "validation_images": len(val), "test_images": len(test)},
        "machine": machine(), "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "top_ops_by_self_cpu": [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3),
                                 "self_cpu_s": round(e.self_cpu_time_total / 1e6, 2), "calls": e.count}
                                for e in top],
        "convolution_share": round(sum(e.self_cpu_time_total for e in events if "convolution" in e.key) / total, 3),
        "work_share_per_run": {k: round(v / sum(passes.values()), 3) for k, v in passes.items()},
    }


def paper_grid_memory(pretrain_epochs: int) -> dict:
    """Peak host memory of a real sweep (``run_sweep``, results into a temporary folder) over the
    cells of the MNIST ``paper`` grid that need the most: the largest percentage at every cut
    point and the baseline, one epoch.  Neither more epochs nor more repeats add memory: each
    step's activations are bounded by micro-batches, and runs share their training pool."""
    configure_threads()
    setup = get_setup("MNIST", "regular")
    paper, grid = profile("paper", setup)
    cfg = paper.replace(num_train=1, early_stop_patience=6, num_train_pretrain=pretrain_epochs)
    top = max(grid.percentages)
    sweep = SweepGrid((top,), grid.cut_points, {top: 2})
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        os.environ["TRANSFER_OUTPUT_ROOT"] = root  # the committed source model is reused from the repository
        run_sweep(setup, cfg.with_mode("FR"), sweep, progress=False, log=lambda *_: None, device="cpu")
    wall = time.perf_counter() - wall
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "benchmark": "peak host memory of the MNIST paper grid, FR, through run_sweep",
        "cells": {"percentage": top, "repeats": 2, "epochs": 1, "cut_points": list(grid.cut_points),
                  "baseline": True, "paper_grid_percentages": list(grid.percentages)},
        "engine_budgets_bytes": {"step": engine.STEP_BYTES["cpu"], "evaluation": engine.EVAL_BYTES["cpu"],
                                 "prefix_cache": engine.CACHE_BYTES},
        "machine": machine(), "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak, 1), "bound_mb": 4096, "within_bound": peak < 4096,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny grid and network: seconds, writes nothing")
    parser.add_argument("--out", type=Path, help="where to write the JSON (default: benchmarks/results/"
                                                 "sweep_cpu.json; with --smoke only when given)")
    parser.add_argument("--cut-points", type=int, nargs="+", help="only these cut points (the baseline always runs)")
    parser.add_argument("--pretrain-epochs", type=int, default=1, help="epochs of the source model if it is trained")
    parser.add_argument("--profile", action="store_true", help="instead: profile the engine on the costliest "
                                                              "cell (writes sweep_profile_cpu.json)")
    parser.add_argument("--memory", action="store_true", help="instead: peak memory of a real sweep over the "
                                                             "paper grid's largest cells (writes sweep_memory_cpu.json)")
    args = parser.parse_args(argv)
    if args.memory:
        result = paper_grid_memory(args.pretrain_epochs)
        print(json.dumps(result, indent=1))
        write_json_atomic(args.out or RESULTS / "sweep_memory_cpu.json", result)
        return result
    if args.profile:
        result = profile_engine(args.smoke)
        print(json.dumps(result, indent=1))
        out = args.out or (None if args.smoke else RESULTS / "sweep_profile_cpu.json")
        if out:
            write_json_atomic(out, result)
        return result
    result = run(args.smoke, args.pretrain_epochs, args.cut_points)
    out = args.out or (None if args.smoke else RESULTS / "sweep_cpu.json")
    for row in result["rows"][:2]:
        print(f"{row['path']:>9}: {row['wall_s']:8.1f} s wall, {row['cpu_s']:8.1f} s cpu, "
              f"{row['images_per_s']:9.1f} images/s, {row['gflop_per_s']:7.2f} GFLOP/s, "
              f"mean test accuracy {row['mean_test_acc']:.4f}")
    print(f"speed-up {result['speedup']['cpu']['wall']}x wall, {result['speedup']['cpu']['cpu_time']}x cpu time; "
          f"{result['engine_share_of']['reference']:.0%} of the {result['physical_limits']['reference_gflop_per_s']} "
          f"GFLOP/s reference (best convolution {result['physical_limits']['convolution']['gflop_per_s']}, FMA bound "
          f"{result['physical_limits']['fma_bound']['gflop_per_s']}, matmul "
          f"{result['physical_limits']['matmul_gflop_per_s']}); {result['contention']}")
    if out:
        write_json_atomic(out, result)
        print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
