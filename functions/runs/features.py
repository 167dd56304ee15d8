"""Pooled backbone features on disk, computed once per image and reused by every run of a grid.

A cache file holds the features of one (backbone weights, input size, layers, view, dataset
split) for the images extracted so far, by their index in that split; a run asks for indices
and only the missing ones are computed and appended (atomically, under the file's lock, after
reading what other processes added meanwhile).  The test split is extracted once for the whole
grid.  The file also keeps what the extraction cost (images, seconds, energy), so a run can be
charged for the images it uses even when another run extracted them.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.atomic import atomic_file, locked
from ..core.paths import data_root
from ..models.backbones import Backbone

FEATURE_FORMAT = 1  # bump when the way features are computed changes: old cache files are then ignored
# Images per forward pass.  tf_efficientnet_lite0 on 2 cores, channels-last: 84 images/s at 224 px
# with 16 images against 27 with 64 (the activations of small batches stay in the CPU's caches).
EXTRACT_BATCH = 16


def feature_cache_dir() -> Path:
    return Path(os.environ.get("TRANSFER_FEATURE_CACHE", data_root() / "features"))


def cache_key(identity: dict) -> str:
    blob = json.dumps({"format": FEATURE_FORMAT, **identity}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@torch.inference_mode()
def extract(backbone: Backbone, layers: list[str], images: torch.Tensor, crops: bool = False,
            pooling: str = "avg") -> np.ndarray:
    """Concatenated pooled features of ``layers`` for images in [0, 1]: (N, D), or (10, N, D)
    for the ten crops (``pooling``: see :func:`functions.models.backbones.pool`)."""
    backbone.eval()
    views = []
    for i in range(0, len(images), EXTRACT_BATCH):
        chunk = images[i:i + EXTRACT_BATCH]
        inputs = backbone.crops(chunk) if crops else [backbone.adapt(chunk)]
        views.append(np.stack([torch.cat(backbone.pooled(x, layers, pooling), dim=1).numpy() for x in inputs]))
    probe = torch.zeros(1, backbone.channels, backbone.input_size, backbone.input_size)
    width = 0 if views else torch.cat(backbone.pooled(probe, layers, pooling), dim=1).shape[1]
    out = np.concatenate(views, axis=1) if views else np.zeros((10 if crops else 1, 0, width), np.float32)
    return out if crops else out[0]


@dataclass
class ExtractionCost:
    """What extracting the features of one image cost, on average over a cache file."""

    seconds: float
    energy_kwh: float


class FeatureStore:
    """The cached features of one backbone, layer set and view over one split's images."""

    def __init__(self, backbone: Backbone, layers: list[str], data: dict, images: torch.Tensor, crops: bool = False,
                 cache_dir: Path | None = None, pooling: str = "avg"):
        self.backbone, self.layers, self.images, self.crops = backbone, backbone.check_layers(layers), images, crops
        self.pooling = pooling
        identity = {**backbone.identity(), "layers": self.layers, "crops": crops, "data": data, "count": len(images),
                    **({"pooling": pooling} if pooling != "avg" else {})}
        self.path = Path(cache_dir or feature_cache_dir()) / f"{cache_key(identity)}.npz"
        self.ids, self.features = np.zeros(0, np.int64), None
        self.totals = {"images": 0, "seconds": 0.0, "energy_kwh": 0.0}
        self._load()

    def _load(self) -> None:
        """What the cache file holds now (other processes may have added images)."""
        if self.path.exists():
            with np.load(self.path) as saved:
                self.ids, self.features = saved["ids"], saved["features"]
                self.totals = json.loads(str(saved["totals"]))

    def get(self, ids, meter=None) -> np.ndarray:
        """Features of images ``ids`` (computing and saving the missing ones, inside a
        ``feature_extraction`` phase of ``meter`` when given)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(np.setdiff1d(ids, self.ids)):
            with locked(self.path):  # one process extracts an image; the others read its features
                self._load()
                missing = np.setdiff1d(ids, self.ids)
                if len(missing):
                    self._extract(missing, meter)
        position = {int(i): p for p, i in enumerate(self.ids)}
        rows = np.array([position[int(i)] for i in ids], dtype=np.int64)
        return self.features[:, rows] if self.crops else self.features[rows]

    def _extract(self, missing: np.ndarray, meter) -> None:
        """Compute the features of images ``missing`` and append them to the file."""
        phase = meter.phase("feature_extraction") if meter is not None else nullcontext()
        began = time.perf_counter()
        with phase as measured:
            new = extract(self.backbone, self.layers, self.images[torch.from_numpy(missing)], self.crops,
                          self.pooling)
        spent = measured.record() if measured is not None else {}
        self.totals = {"images": self.totals["images"] + len(missing),
                       "seconds": self.totals["seconds"] + time.perf_counter() - began,
                       "energy_kwh": self.totals["energy_kwh"] + (spent.get("feature_extraction_energy_kwh") or 0.0)}
        axis = 1 if self.crops else 0
        self.ids = np.concatenate([self.ids, missing])
        self.features = new if self.features is None else np.concatenate([self.features, new], axis=axis)
        with atomic_file(self.path, "wb") as fh:
            np.savez(fh, ids=self.ids, features=self.features, totals=json.dumps(self.totals))

    def cost_per_image(self) -> ExtractionCost:
        images = max(self.totals["images"], 1)
        return ExtractionCost(self.totals["seconds"] / images, self.totals["energy_kwh"] / images)
