"""The batched engine against the plain trainer run by run: same weights, accuracies, epochs and
statuses.  In float64 the two agree to 1e-9 relative, which pins the algorithm; in float32 they
agree to the rounding of the processor's kernels, which differs between AVX2 and AVX-512."""
import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest
import torch

from functions.models import study_cnn as models
from functions.train import engine
from functions.config import Config
from functions.data.tasks import Split
from functions.train.trainer import fit, prefix_features
from functions.core.paths import REPO_ROOT

CFG = Config(num_channels=4, depth=3)
FIT = dict(lr=1e-2, batch_size=16)
# Weight tolerances per dtype.  Adam divides by the root of the squared gradients, so rounding
# in a near-zero gradient can move a weight by a sizeable part of lr: float32 weights differ by
# up to 1e-4, float64 ones by 1e-14.
TOLERANCE = {
    # measured on AVX-512 and AVX2 alike: 1.1e-14 absolute, 9e-13 relative (weights above 1e-3)
    torch.float64: dict(rtol=1e-9, atol=1e-12),
    torch.float32: dict(rtol=0, atol=1e-3),  # measured: 9.5e-5 (AVX-512), 3.9e-5 (AVX2); 10x margin
}
DTYPES = pytest.mark.parametrize("dtype", TOLERANCE, ids=["float64", "float32"])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread, and much faster when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _blobs(n, seed, classes=3):
    """Classes that differ in mean brightness: learnable in a few steps, far from ties."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, 1, 28, 28, generator=g) * 0.5 + (y.float() - 1).view(-1, 1, 1, 1)
    return Split(x.contiguous(memory_format=torch.channels_last), y)


def _noisy(split, seed):
    """The same images with shuffled labels: accuracy cannot keep improving, so runs stop early."""
    return Split(split.x, split.y[torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))])


def _compare(make, trains, val, test, seeds, *, max_epochs, patience, dtype, start=0, group_trains=None,
             min_steps_per_epoch=1, **group_args):
    """``fit`` run by run on ``trains`` against one ``fit_group`` on ``group_trains`` (default: the same)."""
    one_by_one, grouped = [make(i) for i in range(len(seeds))], [make(i) for i in range(len(seeds))]
    steps = dict(min_steps_per_epoch=min_steps_per_epoch)
    expected = [fit(m, t, val, test, max_epochs=max_epochs, patience=patience, seed=s, start=start, dtype=dtype,
                    **steps, **FIT) for m, t, s in zip(one_by_one, trains, seeds)]
    got = engine.fit_group(grouped, group_trains or trains, val, test, max_epochs=max_epochs, patience=patience,
                           seeds=seeds, start=start, device="cpu", dtype=dtype, **steps, **group_args, **FIT)
    for a, b, ma, mb in zip(expected, got, one_by_one, grouped):
        assert (a.epochs, a.status, a.n_train) == (b.epochs, b.status, b.n_train)
        for key in ("train_acc", "val_acc", "test_acc"):
            assert getattr(a, key) == pytest.approx(getattr(b, key), abs=1e-9, nan_ok=True), key
        for name, tensor in ma.state_dict().items():
            assert tensor.dtype == mb.state_dict()[name].dtype == dtype
            torch.testing.assert_close(tensor, mb.state_dict()[name], **TOLERANCE[dtype])
    return expected, got


@DTYPES
def test_group_equals_fit_run_by_run_with_early_stopping_and_divergence(dtype):
    source = models.build(CFG, (1, 28, 28), 3, seed=0)
    trains = [_blobs(48, 10 + i) for i in range(4)]
    trains[1] = _noisy(trains[1], 1)  # stops early while the others go on
    bad = _blobs(48, 20)
    bad.x[5] = float("nan")  # diverges in its first epoch, mid-epoch for the others
    trains[3] = bad
    expected, _ = _compare(lambda i: models.cut(source, 1, CFG, 3, seed=i), trains, _noisy(_blobs(60, 2), 3),
                           _blobs(60, 3), seeds=[1, 2, 3, 4], max_epochs=8, patience=2, dtype=dtype)
    epochs = [r.epochs for r in expected]
    assert expected[3].status == "diverged" and epochs[3] == 1
    assert len(set(epochs[:3])) > 1, "the check needs runs that stop at different epochs"


@DTYPES
def test_group_on_rows_of_a_cached_prefix_equals_fit_on_copies_of_them(dtype):
    source = models.build(CFG, (1, 28, 28), 3, seed=0)
    pool = prefix_features(source, _blobs(120, 30), 2)
    rows = [torch.randperm(120, generator=torch.Generator().manual_seed(i))[:n] for i, n in enumerate((40, 40, 50))]
    val, test = (prefix_features(source, s, 2) for s in (_blobs(60, 4), _blobs(60, 5)))
    # sizes differ (40, 40, 50): groups of equal size train in turn
    _compare(lambda i: models.cut(source, 2, CFG, 3, seed=i), [pool.subset(r) for r in rows], val, test,
             seeds=[5, 6, 7], max_epochs=3, patience=3, start=2, group_trains=[pool.view(r) for r in rows],
             dtype=dtype)


@DTYPES
@pytest.mark.parametrize("mode", ["F", "FR", "FT"])
def test_group_equals_fit_for_other_modes_and_heads(mode, dtype):
    cfg = CFG.replace(two_linear_layers=True, hidden_dim_lin=8, reinit_both_dense=False).with_mode(mode)
    source = models.build(cfg, (1, 28, 28), 3, seed=0)
    trains = [_blobs(32, 40 + i) for i in range(2)]
    _compare(lambda i: models.cut(source, 1, cfg, 3, seed=i), trains, _blobs(40, 6), _blobs(40, 7),
             seeds=[8, 9], max_epochs=3, patience=3, dtype=dtype)


@DTYPES
def test_memory_bound_trains_baselines_in_micro_batches_and_one_run_per_group(dtype):
    """With a budget of one byte each step runs image by image, each run in its own group;
    the summed gradients are the batch's gradient, so the runs equal ``fit``'s."""
    trains = [_blobs(32, 50 + i) for i in range(3)]
    _compare(lambda i: models.build(CFG, (1, 28, 28), 3, seed=i), trains, _blobs(40, 8), _blobs(40, 9),
             seeds=[1, 2, 3], max_epochs=2, patience=3, step_bytes=1, dtype=dtype)


@DTYPES
def test_epochs_of_a_minimum_number_of_steps_repeat_passes_as_fit_does(dtype):
    """20 images in batches of 16 make 2 steps a pass: 5 steps an epoch take 3 passes, each in its
    own order; early stopping still counts epochs."""
    source = models.build(CFG, (1, 28, 28), 3, seed=0)
    trains = [_blobs(20, 60), _noisy(_blobs(20, 61), 2)]
    expected, _ = _compare(lambda i: models.cut(source, 1, CFG, 3, seed=i), trains, _noisy(_blobs(40, 10), 4),
                           _blobs(40, 11), seeds=[3, 4], max_epochs=6, patience=2, dtype=dtype, min_steps_per_epoch=5)
    assert expected[1].epochs < 6


def test_an_epoch_passes_over_small_subsets_until_it_has_made_the_minimum_of_steps():
    from functions.train.trainer import passes_per_epoch
    # (images, batch, minimum steps) -> passes: one pass whenever it already makes enough steps
    cases = {(25, 64, 100): 100, (260, 64, 100): 20, (2645, 64, 100): 3, (26_460, 64, 100): 1,
             (100, 64, 1): 1, (0, 64, 5): 5}
    assert {case: passes_per_epoch(*case) for case in cases} == cases


def test_micro_batches_split_a_batch_evenly():
    assert [engine._even_parts(size, 64) for size in (16, 64, 65, 260, 4096)] == [16, 64, 33, 52, 64]


def test_staged_inputs_match_prefix_features_and_respect_the_memory_bound(monkeypatch):
    source = models.build(CFG, (1, 28, 28), 3, seed=0)
    split = _blobs(20, 0)
    # one image per chunk: each deeper level is written over the previous one, chunk by chunk
    monkeypatch.setitem(engine.EVAL_BYTES, "cpu", 1)
    levels = []
    for cut_point, start, (staged,) in engine.staged_inputs(source, [split], [0, 2, 3, 1], device="cpu"):
        levels.append((cut_point, start))
        torch.testing.assert_close(staged.x, prefix_features(source, split, cut_point).x)
    assert levels == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert torch.equal(split.x, _blobs(20, 0).x), "the caller's split is left as it was"
    # level 1 (4 x 28 x 28 floats per image) does not fit, level 2 (pooled to 14 x 14) does
    bound = 4 * 4 * 14 * 14 * len(split)
    assert [(c, s) for c, s, _ in engine.staged_inputs(source, [split], [1, 2], max_bytes=bound)] == [(1, 0), (2, 2)]
    assert [(c, s) for c, s, _ in engine.staged_inputs(source, [split], [1, 2], frozen=False)] == [(1, 0), (2, 0)]


def test_bad_groups_are_refused():
    source = models.build(CFG, (1, 28, 28), 3, seed=0)
    split = _blobs(8, 0)
    with pytest.raises(ValueError, match="architecture"):
        engine.fit_group([models.cut(source, 1, CFG, 3, 0), models.cut(source, 2, CFG, 3, 0)], [split, split],
                         split, split, seeds=[0, 1], max_epochs=1, patience=1, **FIT)
    with pytest.raises(ValueError, match="one of each"):
        engine.fit_group([models.cut(source, 1, CFG, 3, 0)], [split, split], split, split, seeds=[0],
                         max_epochs=1, patience=1, **FIT)
    with pytest.raises(ValueError, match="trainable"):
        engine.fit_group([models.cut(source, 1, CFG, 3, 0)], [split], split, split, seeds=[0], start=2,
                         max_epochs=1, patience=1, **FIT)
    with pytest.raises(ValueError, match="CUDA"):
        engine.fit_group([models.cut(source, 1, CFG, 3, 0)], [split], split, split, seeds=[0], device="cpu",
                         precision="bf16", max_epochs=1, patience=1, **FIT)
    with pytest.raises(ValueError, match="float32 weights"):
        engine.fit_group([models.cut(source, 1, CFG, 3, 0)], [split], split, split, seeds=[0], device="cpu",
                         precision="bf16", dtype=torch.float64, max_epochs=1, patience=1, **FIT)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("sweep_benchmark", REPO_ROOT / "benchmarks" / "sweep_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_benchmark_smoke_runs_both_paths_on_real_data(bench, tmp_path):
    out = tmp_path / "sweep.json"
    result = bench.main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    reference, fast = result["rows"][:2]
    assert reference["runs"] == fast["runs"] == 8  # baseline and 3 cut points, 2 repeats each
    assert reference["wall_s"] > 0 and fast["gflop"] > 0 and result["speedup"]["cpu"]["wall"] > 0
    # same runs, same number of steps: the two paths reach the same accuracies up to rounding
    assert result["test_acc_difference"]["max"] < 0.05
    assert all(row["wall_s"] is None for row in result["rows"] if row["device"] == "cuda")
    limits = result["physical_limits"]
    assert limits["reference_gflop_per_s"] == max(limits["convolution"]["gflop_per_s"], limits["fma_bound"]["gflop_per_s"])
    assert limits["fma_bound"]["fp32_lanes"] in (4, 8, 16) and limits["convolution"]["gflop_per_s"] > 0
    assert result["engine_share_of"]["reference"] <= result["engine_share_of"]["convolution_peak"]


def test_benchmark_profile_says_where_the_engine_spends_its_time(bench, tmp_path):
    result = bench.main(["--smoke", "--profile", "--out", str(tmp_path / "profile.json")])
    shares = [op["share"] for op in result["top_ops_by_self_cpu"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.0001
    assert 0 < result["convolution_share"] <= 1
    assert sum(result["work_share_per_run"].values()) == pytest.approx(1, abs=0.01)


def _refusal(call) -> str:
    with pytest.raises(ValueError) as raised:
        call()
    return str(raised.value)


def test_refusals_name_the_layer_the_model_and_the_fix():
    source = models.build(CFG, (1, 28, 28), 3, seed=0)
    split = _blobs(8, 0)

    def group(nets, **options):
        return lambda: engine.fit_group(nets, [split] * len(nets), split, split, seeds=list(range(len(nets))),
                                        max_epochs=1, patience=1, device="cpu", **{**FIT, **options})

    other = models.build(CFG.replace(activation_function="Tanh"), (1, 28, 28), 3, seed=0)
    assert _refusal(group([source, source, other])) == (
        "model 2 differs from model 0 in layers, shapes or frozen parameters; a group must share one "
        "architecture (group runs by cut point)")
    normed = models.build(CFG, (1, 28, 28), 3, seed=0)
    normed.blocks[0].append(torch.nn.BatchNorm2d(4))
    assert _refusal(group([normed])) == "models with buffers (e.g. batch norm statistics) cannot be trained as a group"
    assert _refusal(group([source], precision="fp16")) == "precision 'fp16' is unknown; choose 'fp32' or 'bf16'"
    assert _refusal(group([source], precision="bf16")) == "precision 'bf16' is for CUDA devices; on a CPU use 'fp32'"
    for layer, message in [
        (torch.nn.Conv2d(4, 4, 3, padding=1, groups=2), "blocks.1.0: grouped or non-zero-padded convolutions are "
                                                        "not supported"),
        (torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), "blocks.1.0: grouped or non-zero-padded "
                                                                      "convolutions are not supported"),
        (torch.nn.PReLU(), "blocks.1.0: only Conv2d and Linear layers may carry weights, found PReLU"),
    ]:
        odd = models.build(CFG, (1, 28, 28), 3, seed=0)
        odd.blocks[1][0] = layer
        assert _refusal(lambda: engine.GroupedNet(odd, 0)) == message
    assert _refusal(lambda: engine.grouped([torch.zeros(2, 5)])) == \
        "expected image-like inputs (B, C, H, W), got shape (2, 5)"


def test_runs_that_all_diverge_end_like_fit_and_time_is_shared_within_a_group():
    source = models.build(CFG, (1, 28, 28), 3, seed=0)
    trains = [_blobs(32, 1), _blobs(32, 2)]
    make = lambda i: models.cut(source, 1, CFG, 3, seed=i)
    val, test = _blobs(12, 3), _blobs(12, 4)
    wild = {**FIT, "lr": 1e12}
    expected = [fit(make(i), trains[i], val, test, max_epochs=2, patience=2, seed=i, **wild) for i in range(2)]
    got = engine.fit_group([make(0), make(1)], trains, val, test, seeds=[0, 1], max_epochs=2, patience=2,
                           device="cpu", **wild)
    assert [r.status for r in got] == [r.status for r in expected] == ["diverged", "diverged"]
    assert [(r.epochs, r.val_acc, r.test_acc) for r in got] == [(r.epochs, r.val_acc, r.test_acc) for r in expected]
    began = time.perf_counter()
    timed = engine.fit_group([make(0), make(1)], trains, _blobs(12, 3), _blobs(12, 4), seeds=[0, 1], max_epochs=1,
                             patience=1, device="cpu", **FIT)
    elapsed = time.perf_counter() - began
    assert timed[0].seconds == timed[1].seconds and 0 < sum(r.seconds for r in timed) <= elapsed


def test_an_empty_test_split_gives_nan_accuracy_as_fit_does():
    source = models.build(CFG, (1, 28, 28), 3, seed=0)
    empty = Split(torch.zeros(0, 1, 28, 28).contiguous(memory_format=torch.channels_last),
                  torch.zeros(0, dtype=torch.long))
    _, got = _compare(lambda i: models.cut(source, 1, CFG, 3, seed=i), [_blobs(16, 1)], _blobs(8, 2), empty, [0],
                      max_epochs=1, patience=1, dtype=torch.float64)
    assert got[0].test_acc != got[0].test_acc  # NaN


def test_five_pixel_kernels_train_as_fit_does():
    """Kernel 5 (padding 2): stride, padding and dilation of the grouped convolution all differ from 1."""
    cfg = CFG.replace(kernel_size=5)
    source = models.build(cfg, (1, 28, 28), 3, seed=0)
    _compare(lambda i: models.cut(source, 1, cfg, 3, seed=i), [_blobs(16, 1), _blobs(16, 2)], _blobs(8, 3),
             _blobs(8, 4), [0, 1], max_epochs=1, patience=1, dtype=torch.float64)


def test_staging_leaves_the_pretrained_network_as_it_was():
    """... and the splits passed in; the cached prefixes keep the channels-last layout the blocks return."""
    source = models.build(CFG, (1, 28, 28), 3, seed=0).train()
    before = {name: t.clone() for name, t in source.state_dict().items()}
    split = _blobs(8, 0)
    images = split.x.clone()
    for cut_point, start, (staged,) in engine.staged_inputs(source, [split], [0, 1, 2]):
        if start:
            assert staged.x.is_contiguous(memory_format=torch.channels_last) and not staged.x.is_contiguous()
    assert source.training and all(torch.equal(before[name], t) for name, t in source.state_dict().items())
    assert torch.equal(split.x, images)
