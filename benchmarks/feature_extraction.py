"""Feature-extraction benchmark: the project's extraction against a plain ``model(x)`` loop.

For each backbone and input size, in one process: images per second of timm's network called
plainly in inference mode for batch sizes 1, 16 and 64 in both memory layouts (the plain
batch-64 contiguous loop is the reference), and of the project's extraction
(:func:`functions.runs.features.extract`: grey 28 x 28 digits adapted to the input on the fly,
channels-last, batches of 16, pooled features of the last stage).  The plain loops are handed
inputs already at the backbone's size, so the project's extraction also pays for resizing.
Optionally (``--grid``) the wall time of the whole default few-shot grid of ``python -m functions
fe-vs-ft MNIST`` from an empty feature cache and results folder.

    .venv/bin/python benchmarks/feature_extraction.py            # Lite0 at 224 and 96 px
    .venv/bin/python benchmarks/feature_extraction.py --grid     # and the default grid's wall time
    .venv/bin/python benchmarks/feature_extraction.py --smoke    # seconds; writes nothing

Results: ``benchmarks/results/feature_extraction.json``; the numbers are quoted in docs/results/fe-vs-ft.md.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from functions.core.atomic import write_json_atomic
from functions.core.device import configure_threads
from functions.models.registry import create_backbone
from functions.runs.features import extract
from sample_efficiency import machine

OUT = Path(__file__).resolve().parent / "results" / "feature_extraction.json"


def rate(step, images: int, seconds: float) -> float:
    """Images per second of ``step()`` (which handles ``images`` images), repeated for at least
    ``seconds`` after one warm-up call."""
    step()
    began, done = time.perf_counter(), 0
    while time.perf_counter() - began < seconds:
        step()
        done += images
    return done / (time.perf_counter() - began)


def plain(model, size: int, batch: int, channels_last: bool, seconds: float) -> float:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = model.to(memory_format=fmt)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=fmt)

    def step():
        with torch.inference_mode():
            net(x)
    return rate(step, batch, seconds)


def measure(name: str, size: int, seconds: float, images: int) -> dict:
    model = create_backbone(name).network
    rows = [{"path": "plain model(x)", "batch": batch, "layout": "channels_last" if cl else "contiguous",
             "images_per_s": round(plain(model, size, batch, cl, seconds), 1)}
            for batch in (1, 16, 64) for cl in (False, True)]
    backbone = create_backbone(name, input_size=size)
    digits = torch.rand(images, 1, 28, 28)
    project = rate(lambda: extract(backbone, backbone.layer_names[-1:], digits), images, seconds)
    rows.append({"path": "project extract()", "batch": 16, "layout": "channels_last",
                 "images_per_s": round(project, 1)})
    reference = next(r["images_per_s"] for r in rows if r["batch"] == 64 and r["layout"] == "contiguous")
    best_plain = max(r["images_per_s"] for r in rows[:-1])
    return {"backbone": name, "input_size": size, "rows": rows, "speedup_vs_plain_batch64": round(project / reference, 2),
            "ratio_to_best_plain": round(project / best_plain, 2)}


def grid_wall_time() -> dict:
    from functions.runs.fe_vs_ft import run_study
    with tempfile.TemporaryDirectory() as root:
        os.environ["TRANSFER_OUTPUT_ROOT"] = root
        os.environ["TRANSFER_FEATURE_CACHE"] = str(Path(root) / "features")
        began = time.perf_counter()
        records = run_study("MNIST", progress=False, log=lambda *_: None).records
        return {"command": "python -m functions fe-vs-ft MNIST (defaults, empty cache)", "runs": len(records),
                "seconds": round(time.perf_counter() - began, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_lite0"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 96])
    parser.add_argument("--grid", action="store_true", help="also time the default few-shot grid")
    parser.add_argument("--smoke", action="store_true", help="a few seconds, nothing written")
    args = parser.parse_args()
    configure_threads()
    seconds, images = (0.2, 16) if args.smoke else (4.0, 256)
    results = {"machine": {**machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability()},
               "measurements": [measure(name, size, seconds, images) for name in args.backbones for size in args.sizes]}
    if args.grid and not args.smoke:
        results["grid"] = grid_wall_time()
    print(json.dumps(results, indent=1))
    if not args.smoke:
        write_json_atomic(OUT, results)
        print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
