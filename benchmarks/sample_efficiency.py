"""Sample-efficiency benchmark: feature extraction, run_benchmark latency, milestones per method.

Measured results are in benchmarks/results/sample_efficiency_<machine>.json (the machine, its
load while measuring and the versions are recorded there) and summarised in docs/results/sample-efficiency.md.

    .venv/bin/python benchmarks/sample_efficiency.py [--seeds 10] [--folders MNIST FashionMNIST]

A run for some folders keeps the other folders' numbers already in the file (same protocol).

1. Features of each folder's target task (binary and all classes) extracted once by the folder's
   pretrained source model, into a fresh cache: seconds to extract, seconds to read back.
2. POST /model/run_benchmark with the defaults (and with each method) through the app in this
   process, features cached: median and worst latency.
3. Milestones (median and IQR over seeds, never-reached counts) and relative efficiencies of every
   method on each folder's target tasks, with the service's protocol (batch 1, an evaluation after
   every sample, 80% for 10 consecutive evaluations) over at most ``--max-samples`` samples.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from functions.efficiency import heads
from functions.efficiency import benchmark as se
from functions.core.paths import REPO_ROOT
from functions.core.atomic import write_json_atomic
from functions.core.device import describe_machine

RESULTS = REPO_ROOT / "benchmarks" / "results"


machine = describe_machine  # the other benchmarks import it from here


def machine_slug(info: dict) -> str:
    return re.sub(r"[^a-z0-9]+", "-", f"{info['cpu']} {info['cores']}cpu".lower()).strip("-")


def extraction(folder: str, cache: Path) -> dict:
    """Seconds to extract each target task's features once, and to read them back from the cache."""
    extractor = se.source_extractor(folder, train_if_missing=False, log=lambda *_: None)
    out = {"extractor": extractor.identity(), "feature_dim": extractor.dim}
    for task in ("binary", "all"):
        target = se.target_task(folder, task=task)
        began = time.perf_counter()
        features = se.task_features(extractor, target, cache_dir=cache, log=print)
        extract_seconds = time.perf_counter() - began
        began = time.perf_counter()
        se.task_features(extractor, target, cache_dir=cache)
        out[task] = {"classes": list(target.classes), "train": int(len(features.train_y)),
                     "val": int(len(features.val_y)), "seconds_total": round(extract_seconds, 2),
                     "seconds_extracting": round(features.seconds, 2),
                     "seconds_from_cache": round(time.perf_counter() - began, 4)}
    return out


def latency(cache: Path, repeats: int = 20) -> dict:
    """run_benchmark through the app (features cached), with the defaults and with each method."""
    from fastapi.testclient import TestClient

    from functions.efficiency.service import ServiceSettings, create_app, load_state

    os.environ["TRANSFER_FEATURE_CACHE"] = str(cache)
    state = load_state(ServiceSettings(), log=lambda *_: None)
    out = {"task": {"dataset": state.task.dataset, "classes": list(state.task.classes),
                    "val": int(len(state.features.val_y))}, "default_method": state.settings.method}
    with TestClient(create_app(state=state)) as client:  # the lifespan sets BLAS as the server does
        for name, body in [("defaults", {})] + [(m, {"method": m}) for m in heads.METHODS]:
            client.post("/model/run_benchmark", json=body)  # warm-up
            seconds = []
            for seed in range(repeats):
                began = time.perf_counter()
                response = client.post("/model/run_benchmark", json={**body, "seed": seed})
                seconds.append(time.perf_counter() - began)
                assert response.status_code == 200, response.text
            out[name] = {"median_s": round(statistics.median(seconds), 4), "max_s": round(max(seconds), 4)}
            print(f"run_benchmark {name}: median {out[name]['median_s']:.3f} s, max {out[name]['max_s']:.3f} s")
    return out


def study(folder: str, task: str, seeds: int, max_samples: int, results_dir: Path) -> dict:
    result = se.run_study(folder, task=task, seeds=seeds, max_samples=max_samples, results_dir=results_dir,
                          plot=False, progress=True)
    table = result.table
    clean = lambda v: None if isinstance(v, float) and np.isnan(v) else v
    return {
        "classes": result.params["classes"], "pool_size": result.params["pool_size"],
        "val_size": result.params["val_size"],
        "methods": {m: {k: clean(v) for k, v in row.items()} for m, row in table.to_dict(orient="index").items()},
        "milestones": {m: [r["milestone"] for r in result.records if r["method"] == m] for m in table.index},
        "seconds_per_run": {m: round(float(np.median([r["seconds"] for r in result.records if r["method"] == m])), 3)
                            for m in table.index},
        "table": se.format_summary(table),
    }


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folders", nargs="+", default=["MNIST", "FashionMNIST"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--max-samples", type=int, default=1000)
    parser.add_argument("--skip-study", action="store_true")
    args = parser.parse_args(argv)
    info = machine()
    path = RESULTS / f"sample_efficiency_{machine_slug(info)}.json"
    protocol = {"batch_size": 1, "evaluation_frequency": 1, "threshold": 0.8, "window": 10,
                "max_samples": args.max_samples, "seeds": args.seeds}
    report = {"machine": info, "protocol": protocol, "extraction": {}, "study": {}}
    if path.exists():  # keep the folders measured by an earlier run with the same protocol
        earlier = json.loads(path.read_text())
        if earlier.get("protocol") == protocol:
            report["extraction"], report["study"] = earlier["extraction"], earlier["study"]
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "features"
        for folder in args.folders:
            report["extraction"][folder] = extraction(folder, cache)
        report["run_benchmark_latency"] = latency(cache)
        if not args.skip_study:
            os.environ["TRANSFER_FEATURE_CACHE"] = str(cache)
            for folder in args.folders:
                for task in ("binary", "all"):
                    report["study"][f"{folder}/{task}"] = study(folder, task, args.seeds, args.max_samples,
                                                                Path(tmp) / folder)
    report["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    write_json_atomic(path, report)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
