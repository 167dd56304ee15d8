"""Image-loading benchmark: the decoded-image cache against torchvision's ImageFolder + DataLoader.

The time to build the training tensors of an image folder (``clipart`` by default: every image
as float tensors, labels beside them) for a grid of runs, each run reading the folder once, as
each process of a grid or notebook does.  ``--data`` is a one-split folder (``root/<label>/<image>``),
which ImageFolder reads too.  Measured side by side in one process, the two
alternating run by run so that the load of a shared machine falls on both:

* ours: :func:`functions.data.image_dataset.load_dataset` (which hashes every file for the
  fingerprint) and ``.task(size, 3)`` (train, val and test tensors, normalised).  The first run
  starts from an empty image cache and decodes every image once; the others read the cache.
* theirs: torchvision's ``ImageFolder`` with the same resize (squashed to the square, bicubic,
  antialiased), RGB and ``ToTensor``, through a ``DataLoader`` of 2 worker processes, batches
  concatenated into one tensor; every run decodes every image.  Its default loader drops the
  alpha channel of a transparent image where ours composites it on white, so one more pass, with a
  loader that composites on white, checks that both give the same pixels (and times that work).

    .venv/bin/python benchmarks/image_loading.py                        # clipart at 96 and 224 px, 10 runs
    .venv/bin/python benchmarks/image_loading.py --note "machine shared with other jobs"
    .venv/bin/python benchmarks/image_loading.py --data DIR --sizes 16 --runs 2 --out FILE   # seconds

Each call appends one record (machine, load average at start and end, seconds of every run) to
``benchmarks/results/image_loading.json``; the numbers are quoted in docs/getting-started/own-images.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from functions.core.atomic import write_json_atomic
from functions.core.device import configure_threads, describe_machine
from functions.data.image_dataset import load_dataset

OUT = Path(__file__).resolve().parent / "results" / "image_loading.json"
TARGET_GRID_SPEEDUP = 5.0


def ours(data: str, size: int, cache_root: Path) -> tuple[float, float]:
    """Seconds to fingerprint the folder, and to build its task's tensors at ``size``."""
    began = time.perf_counter()
    dataset = load_dataset(data, cache_root=cache_root)
    hashed = time.perf_counter()
    dataset.task(size, 3)
    return hashed - began, time.perf_counter() - hashed


def theirs(root: Path, size: int, workers: int, batch: int, loader=datasets.folder.default_loader
           ) -> tuple[float, torch.Tensor, list]:
    """Seconds for one pass of ImageFolder + DataLoader, the images, and their files in order."""
    began = time.perf_counter()
    folder = datasets.ImageFolder(root, loader=loader, transform=transforms.Compose([
        transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC, antialias=True),
        transforms.ToTensor()]))
    xs, ys = zip(*DataLoader(folder, batch_size=batch, num_workers=workers))
    x, _ = torch.cat(xs), torch.cat(ys)
    return time.perf_counter() - began, x, [path for path, _ in folder.samples]


def on_white(path: str) -> Image.Image:
    """ImageFolder's loader made to composite transparent images on white, as ours does (the
    default one drops their alpha channel)."""
    with Image.open(path) as image:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


def same_pixels(data: str, cache_root: Path, size: int, x: torch.Tensor, files: list) -> int:
    """How many images ImageFolder decoded to the very pixels of our cache."""
    dataset = load_dataset(data, cache_root=cache_root)
    index = {str((dataset.manifest.root / e.path).resolve()): i for i, e in enumerate(dataset.manifest.entries)}
    cached = dataset.images(size)
    theirs_u8 = torch.round(x * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return sum(bool(np.array_equal(cached[index[str(Path(path).resolve())]], theirs_u8[row]))
               for row, path in enumerate(files))


def measure(data: str, size: int, runs: int, workers: int, batch: int) -> dict:
    root = load_dataset(data).manifest.root  # hashes every file once: both sides then read them from the page cache
    ours_hash, ours_task, their_runs = [], [], []
    with tempfile.TemporaryDirectory() as cache_root:
        for _ in range(runs):  # alternating, so that a shared machine's load falls on both
            hashed, built = ours(data, size, Path(cache_root))
            ours_hash.append(round(hashed, 3))
            ours_task.append(round(built, 3))
            seconds, x, files = theirs(root, size, workers, batch)
            their_runs.append(round(seconds, 3))
        identical = same_pixels(data, Path(cache_root), size, x, files)
        white_seconds, white_x, _ = theirs(root, size, workers, batch, on_white)
        identical_white = same_pixels(data, Path(cache_root), size, white_x, files)
    our_runs = [round(h + t, 3) for h, t in zip(ours_hash, ours_task)]
    one_pass = statistics.median(their_runs)
    return {"size": size, "images": len(files), "ours_seconds": our_runs, "ours_hash_seconds": ours_hash,
            "ours_task_seconds": ours_task, "theirs_seconds": their_runs,
            "ours_first_read": our_runs[0], "ours_warm_median": statistics.median(our_runs[1:] or our_runs),
            "theirs_median_pass": one_pass, "grid_ours": round(sum(our_runs), 2),
            "grid_theirs": round(sum(their_runs), 2), "grid_speedup": round(sum(their_runs) / sum(our_runs), 2),
            "first_read_over_one_pass": round(our_runs[0] / one_pass, 2),
            "target_grid_speedup_met": sum(their_runs) / sum(our_runs) >= TARGET_GRID_SPEEDUP,
            "target_first_read_met": our_runs[0] <= one_pass, "identical_images": identical,
            "theirs_on_white_one_pass": round(white_seconds, 3), "identical_images_on_white": identical_white}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="clipart", help="a folder, CSV or prepared dataset's name")
    parser.add_argument("--sizes", nargs="+", type=int, default=[96, 224])
    parser.add_argument("--runs", type=int, default=10, help="runs of the grid, each reading the folder once")
    parser.add_argument("--workers", type=int, default=2, help="the DataLoader's worker processes")
    parser.add_argument("--batch-size", type=int, default=64, help="the DataLoader's batch size")
    parser.add_argument("--note", default="", help="what else ran on the machine, recorded with the numbers")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    configure_threads()
    warnings.filterwarnings("ignore", "Palette images with Transparency")  # Pillow's advice, for each such file
    record = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": describe_machine(), "note": args.note, "data": str(args.data), "runs": args.runs,
              "dataloader": {"workers": args.workers, "batch_size": args.batch_size}}
    record["sizes"] = [measure(args.data, size, args.runs, args.workers, args.batch_size) for size in args.sizes]
    record["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    history = json.loads(args.out.read_text())["records"] if args.out.exists() else []
    write_json_atomic(args.out, {"records": history + [record]})
    print(json.dumps(record, indent=1))
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
