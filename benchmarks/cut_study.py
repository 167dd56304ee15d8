"""The backbone cut-point study against a plain fine-tuning loop, and the input size it runs at.

1. Speed.  The same grid three ways, one after another in this process on a quiet machine:
   EfficientNet-Lite0 on the clipart images at 96 px, mode FR, every cut point 1..9 (stem ..
   head), 2 images per class and the whole training pool, 1 repeat, 3 epochs with early stopping
   off (every run trains the same number of steps each way: 16 images a step, at least 10 steps
   an epoch, as the study's real profile does).
   - ``study``: :class:`functions.runs.backbone_study.CutStudy`: the images decoded once into the
     image cache, each cut point's frozen prefix computed once for every image, every run training
     and scoring only the stages after it.
   - ``plain_files``: what a fine-tuning script does per run: timm's network (a copy of the
     pretrained one, the stages after the cut re-initialised as the study does, the first k
     stages' weights frozen), a ``DataLoader`` reading the image files (decoded, made RGB,
     resized) at every visit, the whole network forward at every step, the validation images
     through the whole network after every epoch, the test images at the end.
   - ``plain_pixels``: the same loop fed the already decoded pixels: what the frozen prefix
     alone saves.
   Target: the study at least 3x faster on 2 cores.  Accuracies are reported, not compared (the
   plain loop's frozen BatchNorm layers keep updating their statistics, as a script that only
   sets ``requires_grad`` lets them).

2. Input size.  One cell of the real protocol (mode F, cut point 5 = block4, 10 images per
   class, 3 repeats, early stopping as in the sweeps) at 96, 128 and 160 pixels: test accuracy and
   seconds for each.

    .venv/bin/python benchmarks/cut_study.py      # results/cut_study_<machine>.json
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

sys.path.insert(0, str(Path(__file__).parent))
from sample_efficiency import machine, machine_slug  # noqa: E402

from functions.core.atomic import write_json_atomic  # noqa: E402
from functions.models.cuts import reinitialise  # noqa: E402
from functions.runs.backbone_study import CutStudy, CutStudySettings, grid  # noqa: E402

RESULTS = Path(__file__).parent / "results"
EPOCHS, CUTS, PER_CLASS = 3, tuple(range(1, 10)), (2,)


class FileImages(torch.utils.data.Dataset):
    """A split's images read from their files at every visit, as a plain script's ``DataLoader``
    over an image folder reads them: decoded, made RGB, resized to the input size, in [0, 1]."""

    def __init__(self, study: CutStudy, split, rows=None):
        from torchvision import transforms
        entries = study.dataset.manifest.entries
        keep = split.x.rows if rows is None else split.x.rows[np.asarray(rows)]
        self.files = [study.dataset.manifest.root / entries[i].path for i in keep]
        self.y = split.y if rows is None else split.y[torch.as_tensor(rows)]
        size = study.backbone.input_size
        self.transform = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image
        with Image.open(self.files[i]) as image:
            return self.transform(image.convert("RGB")), self.y[i]


class PixelImages(torch.utils.data.Dataset):
    """The same images already decoded at the input size (the toolkit's image cache)."""

    def __init__(self, study: CutStudy, split, rows=None):
        index = torch.arange(len(split)) if rows is None else torch.as_tensor(rows)
        self.x, self.y = split.x[index], split.y[index]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def plain_run(study: CutStudy, images, cut_point: int, index: torch.Tensor, seed: int) -> float:
    """One FR run as a plain script trains it, its images from ``images`` (:class:`FileImages` or
    :class:`PixelImages`); returns its test accuracy."""
    import copy
    s, backbone = study.settings, study.backbone
    torch.manual_seed(seed)
    net = copy.deepcopy(backbone.network)
    net.reset_classifier(study.task.num_classes)
    stages = list(backbone.layer_names)
    modules = {"stem": [net.conv_stem, net.bn1], "head": [net.conv_head, net.bn2],
               **{f"block{i + 1}": [block] for i, block in enumerate(net.blocks)}}
    for name in stages[:cut_point]:
        for module in modules[name]:
            module.requires_grad_(False)
    reinitialise([m for name in stages[cut_point:] for m in modules[name]], backbone, seed)
    net.to(memory_format=torch.channels_last)
    train = images(study, study.task.train, index)
    steps = max(len(train), s.batch_size * s.min_steps_per_epoch)
    loader = DataLoader(train, batch_size=s.batch_size,
                        sampler=RandomSampler(range(len(train)), num_samples=steps,
                                              generator=torch.Generator().manual_seed(seed)))
    optim = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=s.lr)

    def accuracy(split) -> float:
        net.eval()
        right = total = 0
        with torch.no_grad():
            for x, y in DataLoader(images(study, split), batch_size=64):
                right += int((net(backbone.adapt(x)).argmax(1) == y).sum())
                total += len(y)
        return right / total
    for _ in range(EPOCHS):
        net.train()
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(net(backbone.adapt(x)), y)
            optim.zero_grad()
            loss.backward()
            optim.step()
        accuracy(study.task.val)
    return accuracy(study.task.test)


def speed() -> dict:
    settings = CutStudySettings(max_epochs=EPOCHS, patience=EPOCHS)
    out = {}
    with tempfile.TemporaryDirectory() as root:
        os.environ["TRANSFER_OUTPUT_ROOT"] = root
        study = CutStudy("clipart", "FR", settings, log=lambda *_: None)
        sweep = grid(PER_CLASS, (1.0,), CUTS, repeats=1)
        began = time.perf_counter()
        study.run(sweep, baselines=False, progress=False)
        out["study_seconds"] = time.perf_counter() - began
        records = study.files["results"].records
        out["runs"] = len(records)
        out["study_test_acc_mean"] = float(np.mean([r["test_acc"] for r in records]))
        out["study_seconds_per_cut"] = {str(c): round(sum(r["seconds"] for r in records
                                                          if r["sampled_cut_point"] == c), 2) for c in CUTS}
        for name, images in (("plain_files", FileImages), ("plain_pixels", PixelImages)):
            began, accs = time.perf_counter(), []
            for cell in _all_cells(sweep):
                for repeat in cell.repeats:
                    accs.append(plain_run(study, images, cell.cut_point, study.subset(cell.size, repeat), repeat))
            out[f"{name}_seconds"] = time.perf_counter() - began
            out[f"{name}_test_acc_mean"] = float(np.mean(accs))
            out[f"speed-up over {name}"] = out[f"{name}_seconds"] / out["study_seconds"]
    return out


def _all_cells(sweep):
    """The grid's cells as if none were saved (the plain loop runs the same ones)."""
    from functions.runs.backbone_study import Cell
    return [Cell("results", c, size, tuple(range(sweep.repeats_for(size)))) for c in sorted(sweep.cut_points)
            for size in sweep.sizes]


def input_sizes() -> dict:
    out = {}
    for size in (96, 128, 160):
        with tempfile.TemporaryDirectory() as root:
            os.environ["TRANSFER_OUTPUT_ROOT"] = root
            study = CutStudy("clipart", "F", CutStudySettings(input_size=size), log=lambda *_: None)
            began = time.perf_counter()
            study.run(grid((10,), (), (5,), repeats=3), baselines=False, progress=False)
            seconds = time.perf_counter() - began
            accs = [r["test_acc"] for r in study.files["results"].records]
            out[str(size)] = {"seconds": round(seconds, 1), "test_acc_mean": round(float(np.mean(accs)), 4),
                              "test_acc_sd": round(float(np.std(accs, ddof=1)), 4), "test_acc": accs}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / f"cut_study_{machine_slug(machine())}.json")
    args = parser.parse_args()
    info = machine()
    result = {"machine": info, "torch_threads": torch.get_num_threads(), "speed": speed(),
              "input_size": input_sizes()}
    write_json_atomic(args.out, result)
    print(result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
