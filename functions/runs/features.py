"""The feature store: outputs of a network over a split's images, computed once per image and
reused by every caller (the grids' runs, the model zoo, the sample-efficiency benchmark).

A store file holds, for one (network, layers, pooling, view, images) -- the key, made in one
place, :func:`store_key` -- the outputs extracted so far, by image index in that split: the
features, and any extra outputs the computation gives (e.g. a source head's probabilities, or
the images' labels).  A caller asks for indices (:meth:`FeatureStore.get`, :meth:`FeatureStore.rows`)
or for the whole split (:meth:`FeatureStore.split`); only the missing images are computed and
appended (atomically, under the file's lock, after reading what other processes added
meanwhile).  The file also keeps what the extraction cost (images, seconds, energy), so a run can
be charged for the images it uses even when another run extracted them.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..core.atomic import atomic_file, locked
from ..core.device import forward_chunk
from ..core.paths import data_root
from ..models.backbones import Backbone

FEATURE_FORMAT = 2  # bump when the way features are computed or stored changes: old cache files are then ignored
FEATURES = "features"
# images read and extracted at a time when filling a store: a multiple of every device's forward
# chunk (so the network sees the same batches as in one call), and a lazily read split of any size
# holds only these images' pixels at once
EXTRACT_ROWS = 1024


def feature_cache_dir() -> Path:
    return Path(os.environ.get("TRANSFER_FEATURE_CACHE", data_root() / "features"))


def store_key(network: dict, layers, pooling: str, view: str, data: dict) -> str:
    """The one key of a store file: the network's identity (kind, weights hash, input size and
    whatever else decides its outputs), the layers read, their pooling, the view of the images
    (one, or ten crops) and the images' identity (dataset or task, split, count)."""
    blob = json.dumps({"format": FEATURE_FORMAT, "network": network, "layers": layers, "pooling": pooling,
                       "view": view, "data": data}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@torch.inference_mode()
def extract(backbone: Backbone, layers: list[str], images: torch.Tensor, crops: bool = False,
            pooling: str = "avg") -> np.ndarray:
    """Concatenated pooled features of ``layers`` for images in [0, 1]: (N, D), or (10, N, D)
    for the ten crops (``pooling``: see :func:`functions.models.backbones.pool`)."""
    backbone.eval()
    views, size = [], forward_chunk(images.device)
    for i in range(0, len(images), size):
        chunk = images[i:i + size]
        inputs = backbone.crops(chunk) if crops else [backbone.adapt(chunk)]
        views.append(np.stack([torch.cat(backbone.pooled(x, layers, pooling), dim=1).numpy() for x in inputs]))
    probe = torch.zeros(1, backbone.channels, backbone.input_size, backbone.input_size)
    width = 0 if views else torch.cat(backbone.pooled(probe, layers, pooling), dim=1).shape[1]
    out = np.concatenate(views, axis=1) if views else np.zeros((10 if crops else 1, 0, width), np.float32)
    return out if crops else out[0]


class Computation(Protocol):
    """What a store computes: ``network``, ``layers``, ``pooling`` and ``view`` enter its key;
    calling it on a batch of the split (``images[rows]``) gives each output's rows (``features``
    at least), with the image axis first, or second for ``view == "crops"``."""

    network: dict
    layers: list
    pooling: str
    view: str

    def __call__(self, batch) -> dict[str, np.ndarray]: ...


@dataclass
class BackboneFeatures:
    """A backbone's pooled ``layers``, over the images as they are or over their ten crops."""

    backbone: Backbone
    layers: list
    crops: bool = False
    pool: str = "avg"

    @property
    def network(self) -> dict:
        return self.backbone.identity()

    @property
    def pooling(self) -> str:
        return self.pool

    @property
    def view(self) -> str:
        return "crops" if self.crops else "image"

    def __call__(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        return {FEATURES: extract(self.backbone, self.layers, batch, self.crops, self.pool)}


@dataclass
class ExtractionCost:
    """What extracting the features of one image cost, on average over a cache file."""

    seconds: float
    energy_kwh: float


class FeatureStore:
    """The cached outputs of one computation over one split's images.

    ``FeatureStore(backbone, layers, data, images, crops, cache_dir, pooling)``: a backbone's
    pooled layers; :meth:`of`: any :class:`Computation`.  ``data`` names the images (dataset or
    task, split); ``images`` is the split (a tensor, or anything indexed by a tensor of rows), or a
    function giving it, called only when an image is missing (``data`` must then name the images
    fully: their count is not added to the key).
    """

    def __init__(self, backbone: Backbone, layers: list[str], data: dict, images: torch.Tensor, crops: bool = False,
                 cache_dir: Path | None = None, pooling: str = "avg"):
        self._open(BackboneFeatures(backbone, backbone.check_layers(layers), crops, pooling), data, images, cache_dir)
        self.backbone, self.layers, self.crops, self.pooling = backbone, self.computation.layers, crops, pooling

    @classmethod
    def of(cls, computation: Computation, data: dict, images, cache_dir: Path | None = None) -> "FeatureStore":
        store = cls.__new__(cls)
        store._open(computation, data, images, cache_dir)
        return store

    def _open(self, computation: Computation, data: dict, images, cache_dir: Path | None) -> None:
        self.computation, self.images = computation, images
        self.crops = computation.view == "crops"
        self._lazy = lazy = callable(images)
        self.count = None if lazy else len(images)
        key = store_key(computation.network, computation.layers, computation.pooling, computation.view,
                        data if lazy else {**data, "count": self.count})
        self.path = Path(cache_dir or feature_cache_dir()) / f"{key}.npz"
        self.ids, self.outputs = np.zeros(0, np.int64), {}
        self.totals = {"images": 0, "seconds": 0.0, "energy_kwh": 0.0}
        self.computed = 0  # images this object extracted (0: everything was read from the file)
        self._load()

    @property
    def features(self) -> np.ndarray | None:
        return self.outputs.get(FEATURES)

    def _load(self) -> None:
        """What the cache file holds now (other processes may have added images)."""
        if self.path.exists():
            with np.load(self.path) as saved:
                self.ids, self.totals = saved["ids"], json.loads(str(saved["totals"]))
                self.count = int(saved["count"])
                self.outputs = {name: saved[name] for name in saved.files if name not in ("ids", "totals", "count")}

    def _split(self):
        """The split's images (loaded now when they were given as a function)."""
        if self._lazy:
            self.images, self._lazy = self.images(), False
        self.count = len(self.images)
        return self.images

    def rows(self, ids, meter=None) -> dict[str, np.ndarray]:
        """Every output for images ``ids`` (computing and saving the missing ones, inside a
        ``feature_extraction`` phase of ``meter`` when given)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(np.setdiff1d(ids, self.ids)):
            with locked(self.path):  # one process extracts an image; the others read its outputs
                self._load()
                missing = np.setdiff1d(ids, self.ids)
                if len(missing):
                    self._extract(missing, meter)
        position = {int(i): p for p, i in enumerate(self.ids)}
        rows = np.array([position[int(i)] for i in ids], dtype=np.int64)
        return {name: values[:, rows] if self.crops else values[rows] for name, values in self.outputs.items()}

    def get(self, ids, meter=None) -> np.ndarray:
        """Features of images ``ids`` (see :meth:`rows`)."""
        return self.rows(ids, meter)[FEATURES]

    def split(self, meter=None) -> dict[str, np.ndarray]:
        """Every output for every image of the split, in order."""
        if self.count is None or len(self.ids) < self.count:
            with locked(self.path):
                self._load()
                if self.count is None or len(self.ids) < self.count:
                    self._split()
        return self.rows(np.arange(self.count), meter)

    def _extract(self, missing: np.ndarray, meter) -> None:
        """Compute the outputs of images ``missing`` and append them to the file."""
        images = self._split()
        phase = meter.phase("feature_extraction") if meter is not None else nullcontext()
        began = time.perf_counter()
        with phase as measured:  # a chunk of images at a time: a lazily read split stays out of memory
            parts = [self.computation(images[torch.from_numpy(missing[i:i + EXTRACT_ROWS])])
                     for i in range(0, len(missing), EXTRACT_ROWS)]
            new = {name: np.concatenate([part[name] for part in parts], axis=1 if self.crops else 0)
                   for name in parts[0]}
        spent = measured.record() if measured is not None else {}
        self.totals = {"images": self.totals["images"] + len(missing),
                       "seconds": self.totals["seconds"] + time.perf_counter() - began,
                       "energy_kwh": self.totals["energy_kwh"] + (spent.get("feature_extraction_energy_kwh") or 0.0)}
        self.computed += len(missing)
        axis = 1 if self.crops else 0
        self.ids = np.concatenate([self.ids, missing])
        self.outputs = {name: values if name not in self.outputs else
                        np.concatenate([self.outputs[name], values], axis=axis) for name, values in new.items()}
        with atomic_file(self.path, "wb") as fh:
            np.savez(fh, ids=self.ids, totals=json.dumps(self.totals), count=self.count, **self.outputs)

    def cost_per_image(self) -> ExtractionCost:
        images = max(self.totals["images"], 1)
        return ExtractionCost(self.totals["seconds"] / images, self.totals["energy_kwh"] / images)
