"""Ray benchmark: one grid of equal cells in this process and on a local Ray instance of 1 and 2 CPUs.

Grid: MNIST regular FR on the range profile's network and step floor, cut point 3, 32 data sizes
(0.5% to 16% of the target's training data, all below the floor of 100 steps per epoch) x 3
repeats, early stopping off: 32 cells that each train 3 networks for 10 epochs of 100 steps
(about 10 s on one CPU), so every cell is the same work and the grid is long enough (about five
minutes on one CPU) that the one-off start of Ray is spread over many cells, as in a real sweep.

Each configuration writes into its own empty output root, one after another in this process:
in process with 2 torch threads and with 1 (the same CPUs as Ray with 1 CPU); Ray with 1 CPU (one
actor) and with 2 (two actors), this process staging with 1 thread.  Every Ray run's records are
checked against the in-process ones at 1 thread (equal apart from ``seconds``; an actor trains
with one thread per CPU, and sums split over another number of threads round differently).  Overhead per cell = (Ray with 1 CPU - in process with 1
thread) / cells, split into what it is made of: starting and closing Ray (measured alone), the
runs training slower in the actor than in this process (their records' own ``seconds``), and the
rest (shipping arguments and results, waiting).  Object-store bytes per cell: what each remote cell received before workers
kept their data (the task, and the cut point's whole staged training, validation and test
inputs, for every cell), and now (its training rows, plus each shared value once per actor).
The other grids on the same workers, measured the same way (in process at 1 thread, Ray with 1
and 2 CPUs; records compared the same way, measured times and energy left out): the fe-vs-ft
grid of MNIST with its own source CNN (1, 5 and 10 images per class x 3 splits: 36 runs) and the
zoo build of 4 study CNNs over the bank's 16 smallest tasks (one unit per model), each with an
empty feature cache.

The grid's source model is pretrained once before any timing and copied into each configuration's
output root.  Wall times include starting the local Ray instance and its actors and closing them; that alone
is measured too (started and closed with no work: a one-off cost of each command, near zero on a
running cluster).

    .venv/bin/python benchmarks/ray_benchmark.py --note "quiet machine"    # results/ray_<machine>.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from functions.core.atomic import write_json_atomic
from functions.notebooks.study import plan
from functions.runs.executors import InProcess, RayExecutor, tensor_bytes
from functions.runs.pretrained import load_pretrained
from functions.runs.sweep import run_inputs, run_sweep
from sample_efficiency import machine, machine_slug

RESULTS = Path(__file__).resolve().parent / "results"
PERCENTAGES = [round(0.005 * k, 3) for k in range(1, 33)]
REPEATS, CUT = 3, 3
TARGETS = {"ray_1cpu_over_in_process_at_most": 1.25, "ray_2cpu_speedup_over_1cpu_at_least": 1.6,
           "overhead_per_cell_s_below": 0.5}


def grid():
    setup, cfg, grid = plan("MNIST", None, "range", "FR", PERCENTAGES, REPEATS, [CUT])
    return setup, cfg.replace(early_stop_patience=cfg.num_train), grid


def source_models() -> Path:
    """The grid's source model, pretrained once into a folder of its own (its early stopping is off
    too, so it is not the committed one) and copied into every timed output root: pretraining
    (about 30 s, in the driver alone) is not the cells' work, and timed inside it would add the
    same serial stretch to every configuration."""
    root = Path(tempfile.mkdtemp(prefix="ray-benchmark-source-"))
    os.environ["TRANSFER_OUTPUT_ROOT"] = str(root)
    setup, cfg, _ = grid()
    load_pretrained(setup, cfg, log=lambda *_: None, device="cpu")
    return root / setup.folder / "pretrained_models"


def timed_sweep(make_executor, sources: Path) -> tuple[float, dict, object]:
    """Wall time from starting the executor to closing it, the records, and the executor."""
    with tempfile.TemporaryDirectory() as root:
        os.environ["TRANSFER_OUTPUT_ROOT"] = root
        setup, cfg, cells = grid()
        shutil.copytree(sources, Path(root) / setup.folder / "pretrained_models")
        began = time.perf_counter()
        executor = make_executor()
        try:
            paths = run_sweep(setup, cfg, cells, baselines=False, progress=False, log=lambda *_: None,
                              executor=executor)
        finally:
            executor.close()
        seconds = time.perf_counter() - began
        return seconds, {kind: json.loads(path.read_text()) for kind, path in paths.items()}, executor


def training_seconds(files: dict) -> float:
    """The runs' own training time (their records' ``seconds``): what a cell spends training, so
    that the rest of the wall time is starting, shipping and waiting."""
    return round(sum(record["seconds"] for content in files.values() for record in content[1:]), 1)


def same_records(a: dict, b: dict) -> bool:
    strip = lambda rs: sorted(json.dumps({k: v for k, v in r.items() if k != "seconds"}, sort_keys=True) for r in rs)
    return all(a[k][0] == b[k][0] and strip(a[k][1:]) == strip(b[k][1:]) for k in a)


MEASURED = ("_seconds", "_energy_kwh", "_emissions_kg", "_peak_memory_mb")


def fe_vs_ft_grid(executor) -> list:
    from functions.runs import fe_vs_ft
    settings = fe_vs_ft.FeVsFtSettings(backbone="study")
    records = fe_vs_ft.run_study("MNIST", None, settings, [1, 5, 10], 3, track=False, progress=False,
                                 log=lambda *_: None, executor=executor).records
    return sorted((json.dumps({k: v for k, v in r.items() if not k.endswith(MEASURED)}, sort_keys=True)
                   for r in records))


def zoo_grid(executor) -> list:
    from functions.analysis.model_zoo import matrix
    from functions.data.task_bank import bank
    from functions.models.zoo_catalog import zoo_model
    from functions.runs import zoo_matrix
    models = [zoo_model(n) for n in ("mnist_0-4_d6_w16", "fashion_all_d6_w16", "mnist_all_d4_w16", "fashion_0-4_d2_w32")]
    tasks = sorted(bank(), key=lambda t: t.n_train)[:16]
    frame, _ = zoo_matrix.build(models, tasks, matrix.scores, seeds=2, log=lambda *_: None, executor=executor)
    return frame.round(10).to_dict("records")


def timed_grid(grid, make_executor) -> tuple[float, list]:
    """``grid(executor)`` in empty output and feature-cache folders, timed from starting the executor to closing it."""
    with tempfile.TemporaryDirectory() as root:
        os.environ["TRANSFER_OUTPUT_ROOT"] = root
        os.environ["TRANSFER_FEATURE_CACHE"] = str(Path(root) / "features")
        began = time.perf_counter()
        executor = make_executor()
        try:
            outcome = grid(executor)
        finally:
            executor.close()
        return time.perf_counter() - began, outcome


def other_grids() -> dict:
    torch.set_num_threads(1)
    table = {}
    for name, grid in (("fe-vs-ft, MNIST, study CNN, 36 runs", fe_vs_ft_grid),
                       ("zoo build, 4 models x 16 tasks", zoo_grid)):
        seconds, reference = timed_grid(grid, InProcess)
        rows = [{"executor": "in process, 1 torch thread", "seconds": round(seconds, 1)}]
        for cpus in (1, 2):
            seconds, outcome = timed_grid(grid, lambda: RayExecutor("local", local_cpus=cpus))
            rows.append({"executor": f"ray, local instance of {cpus} CPU(s)", "seconds": round(seconds, 1),
                         "same_records_as_in_process": outcome == reference})
        table[name] = rows
    return table


def bytes_before(sources: Path) -> int:
    """What one remote cell received when every cell got the task and its cut point's whole staged inputs."""
    os.environ["TRANSFER_OUTPUT_ROOT"] = str(sources.parents[1])
    setup, cfg, _ = grid()
    task = cfg.target_task()
    _, *splits = run_inputs(cfg, task, load_pretrained(setup, cfg, log=lambda *_: None, device="cpu"), CUT, "cpu")
    return tensor_bytes(task) + tensor_bytes(splits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--note", type=str, default="", help="what else ran on the machine")
    parser.add_argument("--out", type=Path, default=RESULTS / f"ray_{machine_slug(machine())}.json",
                        help="the results file (default: results/ray_<this machine>.json)")
    parser.add_argument("--only-other-grids", action="store_true",
                        help="measure only the fe-vs-ft and zoo grids, keeping the sweep's rows of the results file")
    args = parser.parse_args()
    if args.only_other_grids:
        result = json.loads(args.out.read_text())
        result["other_grids"] = other_grids()
        result["other_grids_note"] = args.note
        print(json.dumps(result["other_grids"], indent=1))
        write_json_atomic(args.out, result)
        return
    note = args.note
    cells = len(PERCENTAGES)
    load = os.getloadavg()
    rows = []
    sources = source_models()
    torch.set_num_threads(2)
    seconds, _, _ = timed_sweep(InProcess, sources)
    rows.append({"executor": "in process, 2 torch threads", "cpus": 2, "seconds": round(seconds, 1)})
    # the reference: a Ray worker trains with one torch thread per CPU, and float sums split over
    # another number of threads round differently, so records are compared at one thread
    torch.set_num_threads(1)
    seconds, reference, _ = timed_sweep(InProcess, sources)
    rows.append({"executor": "in process, 1 torch thread", "cpus": 1, "seconds": round(seconds, 1),
                 "runs_training_s": training_seconds(reference)})
    shipped, startup = {}, {}
    for cpus in (1, 2):
        began = time.perf_counter()
        RayExecutor("local", local_cpus=cpus).close()
        startup[cpus] = time.perf_counter() - began
        seconds, files, executor = timed_sweep(lambda: RayExecutor("local", local_cpus=cpus), sources)
        shipped[cpus] = (executor.bytes_sent + executor.bytes_shared * executor.slots) / cells
        rows.append({"executor": f"ray, local instance of {cpus} CPU(s) ({executor.slots} actor(s))", "cpus": cpus,
                     "seconds": round(seconds, 1), "of_which_starting_and_closing_ray_s": round(startup[cpus], 1),
                     "runs_training_s": training_seconds(files),
                     "same_records_as_in_process": same_records(reference, files)})
    _, in_process_1, ray_1, ray_2 = (row["seconds"] for row in rows)
    measured = {"ray_1cpu_over_in_process": round(ray_1 / in_process_1, 2),
                "ray_2cpu_speedup_over_1cpu": round(ray_1 / ray_2, 2),
                "overhead_per_cell_s": round((ray_1 - in_process_1) / cells, 2),
                "of_which_per_cell_s": {
                    "starting_and_closing_ray": round(startup[1] / cells, 2),
                    "training_slower_in_the_actor": round((rows[2]["runs_training_s"] - rows[1]["runs_training_s"]) / cells, 2),
                    "shipping_and_waiting": round(((ray_1 - rows[2]["runs_training_s"] - startup[1])
                                                   - (in_process_1 - rows[1]["runs_training_s"])) / cells, 2)},
                "ray_2cpu_speedup_over_in_process_2_threads": round(rows[0]["seconds"] / ray_2, 2)}
    met = {"ray_1cpu_over_in_process": measured["ray_1cpu_over_in_process"] <= TARGETS["ray_1cpu_over_in_process_at_most"],
           "ray_2cpu_speedup_over_1cpu": measured["ray_2cpu_speedup_over_1cpu"] >= TARGETS["ray_2cpu_speedup_over_1cpu_at_least"],
           "overhead_per_cell_s": measured["overhead_per_cell_s"] < TARGETS["overhead_per_cell_s_below"]}
    result = {"machine": {**machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                          "load_average_at_start": [round(v, 2) for v in load]},
              "note": note,
              "grid": f"MNIST regular FR, range network and step floor, cut {CUT}, {cells} data sizes "
                      f"({PERCENTAGES[0]:g}..{PERCENTAGES[-1]:g}) x {REPEATS} repeats, early stopping off: "
                      f"{cells} equal cells of 10 epochs x 100 steps per network",
              "rows": rows, "measured": measured, "targets": TARGETS, "met": met,
              "object_store_mb_per_cell": {"before: task and whole staged inputs per cell": round(bytes_before(sources) / 1e6, 1),
                                           "now, 1 actor": round(shipped[1] / 1e6, 1),
                                           "now, 2 actors": round(shipped[2] / 1e6, 1)},
              "wall_times_include": "starting and closing the local Ray instance and its actors",
              "other_grids": other_grids()}
    shutil.rmtree(sources.parents[1], ignore_errors=True)
    print(json.dumps(result, indent=1))
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
