"""Ray benchmark: the same sweep in this process and as Ray tasks on a local instance of 1 and 2 CPUs.

Grid: MNIST regular FR with the quick profile, cut points 0-6 and the baseline at 1% of the
target data, 2 repeats: 8 cells, so 8 Ray tasks of one CPU each.  Each configuration writes into
its own empty output root, in one process, one after another; the results files of every Ray run
are checked against the in-process ones (records equal apart from ``seconds``).  Overhead per task
= (wall time on Ray with one CPU - wall time in process) / tasks: what scheduling, shipping the
inputs through the object store and starting workers cost where nothing runs in parallel.

    .venv/bin/python benchmarks/ray_benchmark.py    # results/ray.json
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import torch

from functions.core.atomic import write_json_atomic
from functions.notebooks.study import plan
from functions.runs.executors import InProcess, RayExecutor
from functions.runs.sweep import run_sweep
from sample_efficiency import machine

OUT = Path(__file__).resolve().parent / "results" / "ray.json"


def timed_sweep(make_executor) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as root:
        os.environ["TRANSFER_OUTPUT_ROOT"] = root
        setup, cfg, grid = plan("MNIST", None, "quick", "FR", [0.01], 2, list(range(7)))
        began = time.perf_counter()
        executor = make_executor()
        try:
            paths = run_sweep(setup, cfg, grid, progress=False, log=lambda *_: None, executor=executor)
        finally:
            executor.close()
        seconds = time.perf_counter() - began
        return seconds, {kind: json.loads(path.read_text()) for kind, path in paths.items()}


def same_records(a: dict, b: dict) -> bool:
    strip = lambda rs: sorted(json.dumps({k: v for k, v in r.items() if k != "seconds"}, sort_keys=True) for r in rs)
    return all(a[k][0] == b[k][0] and strip(a[k][1:]) == strip(b[k][1:]) for k in a)


def main() -> None:
    tasks = 8
    reference_seconds, reference = timed_sweep(InProcess)
    rows = [{"executor": "in-process", "cpus": torch.get_num_threads(), "seconds": round(reference_seconds, 1)}]
    for cpus in (1, 2):
        seconds, files = timed_sweep(lambda: RayExecutor("local", local_cpus=cpus))
        rows.append({"executor": f"ray, local instance of {cpus} CPU(s)", "cpus": cpus, "seconds": round(seconds, 1),
                     "same_records_as_in_process": same_records(reference, files)})
    overhead = (rows[1]["seconds"] - rows[0]["seconds"]) / tasks
    result = {"machine": {**machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability()},
              "grid": "MNIST regular FR quick, cuts 0-6 + baseline, 1%, 2 repeats (8 tasks)", "rows": rows,
              "overhead_per_task_s": round(overhead, 2),
              "note": "wall times include starting the local Ray instance"}
    print(json.dumps(result, indent=1))
    write_json_atomic(OUT, result)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
