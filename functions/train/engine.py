"""Many independent training runs of one architecture as one batched computation.

A sweep trains the network after a cut point many times (repeats of a percentage), each run on
its own small subset.  One run at a time, every step is a small computation and every epoch
repeats a validation pass through the same images.  Here the runs of a group are stacked: their
weights and Adam states carry a leading run axis, their convolutions run as one grouped
convolution over activations laid out ``(B, runs * C, H, W)`` channels-last, and validation and
test images enter once for all runs.  Each run keeps its own seed and batch order, its own Adam
state, early stopping and best weights, so :func:`fit_group` gives what
:func:`functions.train.trainer.fit` gives run by run, up to float rounding (in float64, to
about 1e-12 relative: the grouped and the plain convolutions sum in different orders).

:func:`staged_inputs` computes the frozen prefix once per cut point, block by block, so that a
sweep over cut points runs the pretrained network through each image once in all.
"""
from __future__ import annotations

import copy
import os
import time
from contextlib import nullcontext
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.device import configure_threads, pick_device
from ..data.tasks import RowView, Split
from ..models.study_cnn import StudyCNN, frozen_prefix_length
from .trainer import RunResult, passes_per_epoch

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, which the trainer uses
# The activations of one forward and backward pass stay under this many bytes: a step's batch
# is split into micro-batches whose gradients add up.  It bounds memory at any batch size (a
# 4096-image batch of the paper network would need 13 GB), and on a 2-core CPU micro-batches of
# about 64 images per run trained 1.2-1.4x faster than 260-image batches (they stay in cache).
STEP_BYTES = {"cpu": 512 << 20, "cuda": 8 << 30}
# A group holds no more runs than give each this many images per micro-batch (or its whole
# batch, when smaller); more runs are trained in turn.
MIN_MICRO_BATCH = 64
# An evaluation chunk's activations stay under this.  On a 2-core CPU, chunks of 8-32 MB ran
# validation about 25% faster than chunks of 64 MB or more, for 16 and for 64 channels alike:
# they stay in the processor's cache between layers.
EVAL_BYTES = {"cpu": 16 << 20, "cuda": 2 << 30}
# Frozen-prefix activations of a cut point are kept when they fit in this many bytes.
CACHE_BYTES = int(os.environ.get("TRANSFER_CACHE_BYTES", 2 << 30))


# ----------------------------------------------------------------------------- the grouped network

class GroupedNet:
    """The layers of ``template`` from block ``start`` on, run for several weight sets at once.

    Weights are a dict ``name -> (runs, *shape)``.  Convolutions become one grouped convolution;
    activations and pooling act per channel, so they run on all runs' channels together; linear
    layers become batched matrix products.  An input shared by all runs (validation, test) enters
    the first convolution once, with the runs' filters side by side.
    """

    def __init__(self, template: StudyCNN, start: int):
        self.start = start
        self.layers = [(f"blocks.{i}.{j}", layer) for i in range(start, len(template.blocks))
                       for j, layer in enumerate(template.blocks[i])]
        head = [] if template.hidden is None else [(f"hidden.{j}", m) for j, m in enumerate(template.hidden)]
        self.head = head + [("fc", template.fc)]
        for name, layer in self.layers + self.head:
            if isinstance(layer, nn.Conv2d):
                if layer.groups != 1 or layer.padding_mode != "zeros":
                    raise ValueError(f"{name}: grouped or non-zero-padded convolutions are not supported")
            elif not isinstance(layer, nn.Linear) and any(True for _ in layer.parameters()):
                raise ValueError(f"{name}: only Conv2d and Linear layers may carry weights, "
                                 f"found {type(layer).__name__}")

    def names(self, model: StudyCNN) -> list[str]:
        """The parameters this net uses (those of blocks >= start and the head)."""
        used = tuple(name + "." for name, _ in self.layers + self.head)
        return [name for name, _ in model.named_parameters() if name.startswith(used)]

    def layout(self, weights: dict) -> dict:
        """Stacked weights ``name -> (runs, *shape)`` as the grouped layers take them: filters of
        all runs side by side, channels-last; done once per evaluation pass, or per step."""
        laid = {}
        for name, layer in self.layers + self.head:
            weight, bias = weights.get(name + ".weight"), weights.get(name + ".bias")
            if isinstance(layer, nn.Conv2d):
                laid[name] = (_channels_last(weight.flatten(0, 1)), None if bias is None else bias.flatten())
            elif isinstance(layer, nn.Linear):
                laid[name] = (weight.transpose(1, 2), None if bias is None else bias.unsqueeze(1))
        return laid

    def __call__(self, laid: dict, h: torch.Tensor, runs: int, shared: bool) -> torch.Tensor:
        """Logits ``(runs, B, classes)`` for weights from :meth:`layout`.  ``h`` is ``(B, C, H, W)``
        when ``shared``, else the runs' own inputs in grouped layout ``(B, runs * C, H, W)``
        (see :func:`grouped`)."""
        fresh = False  # h is a convolution's output that nothing else holds
        for name, layer in self.layers:
            if isinstance(layer, nn.Conv2d):
                h = F.conv2d(h, *laid[name], layer.stride, layer.padding, layer.dilation, groups=1 if shared else runs)
                shared, fresh = False, True
            elif isinstance(layer, nn.ReLU) and fresh:
                h = h.relu_()  # in place: on a CPU a separate ReLU costs a fifth of the forward pass
            else:
                h, fresh = layer(h), False
        h = h.flatten(1) if shared else h.unflatten(1, (runs, -1)).transpose(0, 1).flatten(2)
        for name, layer in self.head:
            if isinstance(layer, nn.Linear):
                weight_t, bias = laid[name]
                h = torch.matmul(h, weight_t)  # (B, F) or (runs, B, F) -> (runs, B, out)
                if bias is not None:
                    h = h + bias
            else:
                h = layer(h)
        return h


def _channels_last(weight: torch.Tensor) -> torch.Tensor:
    """Channels-last strides even for one input channel, where ``.contiguous(memory_format=...)``
    keeps the default ones: the convolution then runs (and returns) channels-last, about
    twice as fast on a CPU, and the next layer needs no copy."""
    return weight.permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format).permute(0, 3, 1, 2)


def grouped(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-run batches ``(B, C, H, W)`` (same B) as one ``(B, runs * C, H, W)`` channels-last tensor."""
    if parts[0].dim() != 4:
        raise ValueError(f"expected image-like inputs (B, C, H, W), got shape {tuple(parts[0].shape)}")
    b, c, hh, ww = parts[0].shape
    stacked = torch.stack([p.permute(0, 2, 3, 1) for p in parts], dim=3)  # (B, H, W, runs, C)
    return stacked.reshape(b, hh, ww, len(parts) * c).permute(0, 3, 1, 2)


def _bytes_per_image(template: StudyCNN, start: int, in_shape: tuple) -> tuple[int, int]:
    """Activation bytes one image of one run needs: (training: every layer's output kept for the
    backward pass, plus gradients; evaluation: the largest layer's input and output)."""
    weight = next(template.parameters())
    h = torch.zeros(1, *in_shape, dtype=weight.dtype, device=weight.device)
    sizes = [h.numel()]
    with torch.no_grad():
        for block in template.blocks[start:]:
            for layer in block:
                h = layer(h)
                sizes.append(h.numel())
    return h.element_size() * 3 * sum(sizes), h.element_size() * 2 * max(sizes)


# ----------------------------------------------------------------------------- stacked runs

class _Runs:
    """The runs of a group still training: stacked weights, Adam moments and their run ids.

    Runs that stop leave the stack, so the steps after that cost nothing for them.
    """

    def __init__(self, models: Sequence[StudyCNN], names: list[str], device: torch.device):
        self.ids = list(range(len(models)))
        stack = {name: torch.stack([m.get_parameter(name).detach() for m in models]).to(device) for name in names}
        trainable = {name for name in names if models[0].get_parameter(name).requires_grad}
        self.frozen = {name: t for name, t in stack.items() if name not in trainable}
        self.trainable = {name: t.requires_grad_() for name, t in stack.items() if name in trainable}
        self.exp_avg = {name: torch.zeros_like(t) for name, t in self.trainable.items()}
        self.exp_avg_sq = {name: torch.zeros_like(t) for name, t in self.trainable.items()}
        self.steps = 0

    def weights(self) -> dict:
        frozen = {name: t[self.ids] for name, t in self.frozen.items()}
        return {**frozen, **self.trainable}

    def keep(self, positions: list[int]) -> None:
        """Keep only the runs at these positions of the stack (gradients follow their weights)."""
        if len(positions) == len(self.ids):
            return
        self.ids = [self.ids[k] for k in positions]
        for name, t in self.trainable.items():
            kept = t.detach()[positions].requires_grad_()
            kept.grad = None if t.grad is None else t.grad[positions]
            self.trainable[name] = kept
            self.exp_avg[name] = self.exp_avg[name][positions]
            self.exp_avg_sq[name] = self.exp_avg_sq[name][positions]

    def losses(self, net: GroupedNet, trains: Sequence, batches: list[torch.Tensor], micro: int,
               autocast) -> torch.Tensor:
        """Each run's mean cross-entropy on its batch (``trains[r]`` rows ``batches[k]`` for the
        k-th run still training), summed over micro-batches of ``micro`` images per run; the
        gradients add up in the stacked weights."""
        for t in self.trainable.values():
            t.grad = None
        size, total = len(batches[0]), 0.0
        for i in range(0, size, micro):
            parts = [trains[r].subset(b[i:i + micro]) for r, b in zip(self.ids, batches)]
            x, y = grouped([part.x for part in parts]), torch.stack([part.y for part in parts])
            with autocast:
                logits = net(net.layout(self.weights()), x, len(self.ids), shared=False)
                losses = F.cross_entropy(logits.flatten(0, 1).to(x.dtype), y.flatten(), reduction="none")
            losses = losses.view(len(self.ids), -1).sum(1) / size
            losses.sum().backward()  # runs share no weight, so each gets the gradient of its own loss
            total = total + losses.detach()
        return total

    @torch.no_grad()
    def adam_step(self, lr: float) -> None:
        """torch.optim.Adam's update (single-tensor form, default betas and eps) on all runs at once."""
        self.steps += 1
        beta1, beta2 = ADAM_BETAS
        step_size = lr / (1 - beta1 ** self.steps)
        bias_correction2_sqrt = (1 - beta2 ** self.steps) ** 0.5
        for name, param in self.trainable.items():
            grad, exp_avg, exp_avg_sq = param.grad, self.exp_avg[name], self.exp_avg_sq[name]
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(ADAM_EPS)
            param.addcdiv_(exp_avg, denom, value=-step_size)


@torch.no_grad()
def _correct(net: GroupedNet, weights: dict, runs: int, split: Split | Sequence[Split], chunk: int,
             autocast) -> list[int]:
    """Correct predictions of each run: on one split shared by all runs, or on each run's own split."""
    shared = isinstance(split, Split)
    size = len(split) if shared else len(split[0])
    correct = torch.zeros(runs, dtype=torch.long, device=next(iter(weights.values())).device)
    laid = net.layout(weights)
    for i in range(0, size, chunk):
        if shared:
            x, y = split.x[i:i + chunk], split.y[i:i + chunk]
        else:
            parts = [s.subset(torch.arange(i, min(i + chunk, size), device=correct.device)) for s in split]
            x, y = grouped([part.x for part in parts]), torch.stack([part.y for part in parts])
        with autocast:
            logits = net(laid, x, runs, shared)
        correct += (logits.argmax(-1) == y).sum(-1)
    return correct.tolist()


def _for_device(budget: dict, device: torch.device) -> int:
    """A per-device byte budget; accelerators other than CUDA get the CUDA one."""
    return budget.get(device.type, budget["cuda"])


def _even_parts(size: int, most: int) -> int:
    """The micro-batch size that splits ``size`` images into equal parts of at most ``most``."""
    parts = -(-size // most)
    return -(-size // parts)


def _accuracy(correct: int, size: int) -> float:
    return correct / size if size else float("nan")


def _fit_chunk(models, trains, val, test, net: GroupedNet, names, *, lr, max_epochs, patience, batch_size,
               min_steps_per_epoch, seeds, device, autocast, micro_batch: int, eval_chunk: int) -> list[RunResult]:
    """Train equal-size runs together; the protocol of :func:`functions.train.trainer.fit` per run."""
    began = time.perf_counter()
    count, size = len(models), len(trains[0])
    runs = _Runs(models, names, device)
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    best = {name: t.detach().clone() for name, t in runs.trainable.items()}
    best_val, stale, epochs, status = [-1.0] * count, [0] * count, [0] * count, ["ok"] * count
    for _ in range(max_epochs):
        if not runs.ids:
            break
        for r in runs.ids:
            epochs[r] += 1
        for _ in range(passes_per_epoch(size, batch_size, min_steps_per_epoch)):
            orders = {r: torch.randperm(size, generator=generators[r]).to(device) for r in runs.ids}
            for i in range(0, size, batch_size):
                batches = [orders[r][i:i + batch_size] for r in runs.ids]
                micro = _even_parts(len(batches[0]), micro_batch)
                finite = torch.isfinite(runs.losses(net, trains, batches, micro, autocast)).tolist()
                for r, ok in zip(runs.ids, finite):
                    if not ok:
                        status[r] = "diverged"
                runs.keep([k for k, ok in enumerate(finite) if ok])
                if not runs.ids:
                    break
                runs.adam_step(lr)
            if not runs.ids:
                break
        if not runs.ids:
            break
        correct = _correct(net, runs.weights(), len(runs.ids), val, eval_chunk, autocast)
        going = []
        for k, (r, c) in enumerate(zip(runs.ids, correct)):
            val_acc = _accuracy(c, len(val))
            if val_acc > best_val[r]:
                best_val[r], stale[r] = val_acc, 0
                with torch.no_grad():
                    for name, t in runs.trainable.items():
                        best[name][r] = t[k]
            else:
                stale[r] += 1
            if stale[r] < patience:
                going.append(k)
        runs.keep(going)

    final = {**runs.frozen, **best}
    test_correct = _correct(net, final, count, test, eval_chunk, autocast)
    train_correct = _correct(net, final, count, list(trains), eval_chunk, autocast)
    unseen = [r for r in range(count) if best_val[r] < 0]  # diverged before any validation pass
    if unseen:
        weights = {name: t[unseen] for name, t in final.items()}
        for r, c in zip(unseen, _correct(net, weights, len(unseen), val, eval_chunk, autocast)):
            best_val[r] = _accuracy(c, len(val))
    with torch.no_grad():
        for r, model in enumerate(models):
            for name in best:
                model.get_parameter(name).copy_(best[name][r])
    share = (time.perf_counter() - began) / count
    return [RunResult(train_acc=_accuracy(train_correct[r], size), val_acc=best_val[r],
                      test_acc=_accuracy(test_correct[r], len(test)), epochs=epochs[r], seconds=share,
                      n_train=size, status=status[r]) for r in range(count)]


def _check_same_architecture(models: Sequence[StudyCNN]) -> None:
    def signature(model):
        return [(n, tuple(p.shape), p.requires_grad) for n, p in model.named_parameters()], \
               [type(m).__name__ for m in model.modules()]
    first = signature(models[0])
    for k, model in enumerate(models[1:], 1):
        if signature(model) != first:
            raise ValueError(f"model {k} differs from model 0 in layers, shapes or frozen parameters; "
                             f"a group must share one architecture (group runs by cut point)")
    if any(True for _ in models[0].buffers()):
        raise ValueError("models with buffers (e.g. batch norm statistics) cannot be trained as a group")


def _placed(split: Split | RowView, device: torch.device, dtype: torch.dtype) -> Split | RowView:
    """``split`` on ``device`` with images in ``dtype``: the same tensors when they already are."""
    if isinstance(split, RowView):
        return RowView(_placed(split.pool, device, dtype), split.index.to(device))
    return Split(split.x.to(device, dtype), split.y.to(device))


def fit_group(models: Sequence[StudyCNN], trains: Sequence[Split | RowView], val: Split, test: Split, *, lr: float,
              max_epochs: int, patience: int, batch_size: int, seeds: Sequence[int], start: int = 0,
              min_steps_per_epoch: int = 1, device: torch.device | str | None = None, precision: str = "fp32",
              step_bytes: int | None = None, dtype: torch.dtype = torch.float32) -> list[RunResult]:
    """Train independent runs of one architecture together; run ``i`` is ``models[i]`` trained on
    ``trains[i]`` with seed ``seeds[i]``, exactly as :func:`functions.train.trainer.fit` would.

    Each model ends holding its best validation weights, as after ``fit``.  ``trains`` may be
    :class:`~functions.data.tasks.Split` or :class:`~functions.data.tasks.RowView` (rows of one shared pool,
    gathered per batch).  Runs with equal training sizes train as one group; the activations of
    a forward and backward pass stay under ``step_bytes`` (default: :data:`STEP_BYTES` of the
    device), by micro-batches and, past that, by more groups in turn.  ``seconds`` is each run's
    share of its group's time.  ``device`` defaults to CUDA when present.  ``precision="bf16"``
    (CUDA only) runs convolutions and matrix products in bfloat16 autocast: faster, no longer
    equal to ``fit`` to float rounding.  ``min_steps_per_epoch``: see :func:`~functions.train.trainer.fit`.
    ``dtype`` is that of the weights, Adam moments and
    inputs (the models are converted, as ``fit`` converts its model): float64 makes the
    comparison with ``fit`` independent of how a processor rounds float32 sums.
    """
    if not (len(models) == len(trains) == len(seeds)):
        raise ValueError(f"got {len(models)} models, {len(trains)} training splits and {len(seeds)} seeds; "
                         f"give one of each per run")
    if not models:
        return []
    _check_same_architecture(models)
    if start > frozen_prefix_length(models[0]):
        raise ValueError(f"inputs enter at block {start} but block {frozen_prefix_length(models[0])} is trainable")
    device = pick_device(device)
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision {precision!r} is unknown; choose 'fp32' or 'bf16'")
    if precision == "bf16" and dtype != torch.float32:
        raise ValueError(f"precision 'bf16' autocasts float32 weights, not {dtype}")
    if precision == "bf16" and device.type != "cuda":
        raise ValueError("precision 'bf16' is for CUDA devices; on a CPU use 'fp32'")
    configure_threads()
    for model in models:
        model.to(dtype)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    net = GroupedNet(models[0], start)
    names = net.names(models[0])
    image_shape = tuple(trains[0].subset(torch.arange(1)).x.shape[1:])
    train_bytes, eval_bytes = _bytes_per_image(models[0], start, image_shape)
    val, test = _placed(val, device, dtype), _placed(test, device, dtype)
    by_size: dict[int, list[int]] = {}
    for i, train in enumerate(trains):
        by_size.setdefault(len(train), []).append(i)
    results: list[RunResult | None] = [None] * len(models)
    step_bytes = step_bytes or _for_device(STEP_BYTES, device)
    for size, members in by_size.items():
        per_group = max(1, step_bytes // (min(batch_size, size, MIN_MICRO_BATCH) * train_bytes))
        for g in range(0, len(members), per_group):
            chunk = members[g:g + per_group]
            micro_batch = max(1, step_bytes // (len(chunk) * train_bytes))
            eval_chunk = max(1, _for_device(EVAL_BYTES, device) // (len(chunk) * eval_bytes))
            placed = [_placed(trains[i], device, dtype) for i in chunk]
            done = _fit_chunk([models[i] for i in chunk], placed, val, test, net, names, lr=lr,
                              max_epochs=max_epochs, patience=patience, batch_size=batch_size,
                              min_steps_per_epoch=min_steps_per_epoch,
                              seeds=[seeds[i] for i in chunk], device=device, autocast=autocast,
                              micro_batch=micro_batch, eval_chunk=eval_chunk)
            for i, result in zip(chunk, done):
                results[i] = result
    return results


# ----------------------------------------------------------------------------- frozen prefixes

def staged_inputs(pretrained: StudyCNN, splits: Sequence[Split], cut_points, *, frozen: bool = True,
                  max_bytes: int = CACHE_BYTES, device: torch.device | str | None = None
                  ) -> Iterator[tuple[int, int, list[Split]]]:
    """``(cut_point, start, splits)`` for each cut point in increasing order, where ``splits``
    enter the network at block ``start``.

    With a frozen prefix, ``start`` is the cut point and the splits hold the prefix's output,
    computed from the previous cut point's output (each block runs once per image in all);
    when that output would pass ``max_bytes``, ``start`` stays at the deepest level that fit
    and training runs the remaining frozen blocks itself.  Without freezing, ``start`` is 0.

    The yielded splits are valid until the next cut point is asked for: then the next level
    replaces them, written over the previous level's memory where it is no larger per image, so
    that a sweep holds one cached level, not two (the paper network's take 1.7 GB each for
    MNIST).  The splits passed in are left as they are.
    """
    device = pick_device(device)
    net = copy.deepcopy(pretrained).to(device).eval()
    level, current = 0, [s.to(device) for s in splits]  # new Split objects, whatever the device
    rows = sum(len(s) for s in splits)
    for cut_point in sorted(set(cut_points)):
        if frozen and cut_point > level:
            with torch.no_grad():
                probe = net.features(current[0].x[:1], level, cut_point)
            if probe.numel() * 4 * rows <= max_bytes:
                for split in current:  # level 0 is the caller's data; deeper levels are ours to overwrite
                    split.x = _prefix(net, split.x, level, cut_point, device, overwrite=level > 0)
                level = cut_point
        yield cut_point, level, current


@torch.no_grad()
def _prefix(net: StudyCNN, x: torch.Tensor, start: int, stop: int, device: torch.device,
            overwrite: bool) -> torch.Tensor:
    """Blocks ``start`` to ``stop`` over ``x`` in cache-sized chunks, written into one tensor.

    With ``overwrite``, an output no larger per image than ``x`` goes into ``x``'s own memory:
    images lie one after another in it, so chunk ``i`` of the output lands at or before where
    chunk ``i`` of ``x`` was read from, and never over images still to be read.
    """
    eval_bytes = _bytes_per_image(net, start, tuple(x.shape[1:]))[1]
    chunk = max(1, _for_device(EVAL_BYTES, device) // eval_bytes)
    first = net.features(x[:chunk], start, stop)
    shape, memory_format = (len(x), *first.shape[1:]), _memory_format(first)
    dense = x.storage_offset() == 0 and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))
    if overwrite and dense and x.dtype == first.dtype and first[0].numel() <= x[0].numel():
        strides = torch.empty(shape, device="meta", memory_format=memory_format).stride()
        out = x.new_empty(0).set_(x.untyped_storage(), 0, shape, strides)
    else:
        out = torch.empty(shape, dtype=first.dtype, device=first.device, memory_format=memory_format)
    out[:chunk] = first
    for i in range(chunk, len(x), chunk):
        out[i:i + chunk] = net.features(x[i:i + chunk], start, stop)
    return out


def _memory_format(h: torch.Tensor) -> torch.memory_format:
    """Channels-last when the blocks returned it, so the cache feeds convolutions without copies."""
    return torch.channels_last if h.dim() == 4 and h.is_contiguous(memory_format=torch.channels_last) \
        and not h.is_contiguous() else torch.contiguous_format
