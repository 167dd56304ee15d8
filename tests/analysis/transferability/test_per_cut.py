"""Scores at every cut point: one pass over the network feeds them, and they equal the scores of the activations."""
import numpy as np
import pytest
import torch
from functions.config import Config
from functions.data.tasks import Split
from functions.models.study_cnn import build
from functions.analysis.transferability import hscore, leep, logme, nce
from functions.notebooks.study import cut_scores
from score_references import reference_hscore


def synthetic_split(n: int) -> Split:
    y = torch.arange(n) % 3
    x = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(0)) + y.view(-1, 1, 1, 1)
    return Split(x.contiguous(memory_format=torch.channels_last), y)


@pytest.mark.parametrize("n, max_dim", [(60, 4096), (150, 64)], ids=["few-samples", "streamed-sums"])
def test_cut_scores_give_one_finite_row_per_cut_point(tiny_model, n, max_dim):
    split = synthetic_split(n)
    table = cut_scores(tiny_model, split, chunk_size=32, max_dim=max_dim, progress=False)
    assert list(table["cut_point"]) == [0, 1, 2, 3]
    assert (table["flat_dim"] <= max_dim).all() and list(table["gap_dim"]) == [1, 8, 8, 8]
    scores = table.drop(columns=["cut_point", "gap_dim", "flat_dim"])
    assert np.isfinite(scores.to_numpy(float)).all()
    with torch.no_grad():
        probs = torch.softmax(tiny_model(split.x).double(), 1).numpy()
    # the scores' pass runs the network on chunks of 32: another batch size rounds float32 differently
    # on some CPUs (an AVX-512 Xeon), so equal up to that rounding
    np.testing.assert_allclose(table["leep"], leep(probs, split.y.numpy()), rtol=1e-6)
    assert (table["nce"] == nce(probs.argmax(1), split.y.numpy())).all()


@pytest.fixture(scope="module")
def four_channel_model():
    """Activations 1x28x28, 4x28x28, 4x14x14 and 4x14x14 entering blocks 0-3: with max_dim=196 each
    is average-pooled by a whole factor (2, 4, 2, 2) to 196 values."""
    return build(Config(num_channels=4, depth=3), (1, 28, 28), 5, seed=0)


def own_activations(model, x: torch.Tensor, pool: dict, chunk: int) -> dict:
    """(cut point, kind) -> the activation entering that block, pooled globally (gap) or by the
    factor ``pool[k]`` and flattened (flat); computed chunk by chunk, as the blocks see them."""
    parts: dict = {}
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            for k in pool:
                h = model.features(x[i:i + chunk], 0, k)
                parts.setdefault((k, "gap"), []).append(h.mean((2, 3)).numpy())
                flat = torch.nn.functional.avg_pool2d(h, pool[k]) if pool[k] > 1 else h
                parts.setdefault((k, "flat"), []).append(flat.flatten(1).numpy())
    return {key: np.concatenate(value) for key, value in parts.items()}


@pytest.mark.parametrize("n, max_dim, pool, flat_from_sums", [
    (300, 196, {0: 2, 1: 4, 2: 2, 3: 2}, True),     # more images than dimensions: running sums throughout
    (150, 196, {0: 2, 1: 4, 2: 2, 3: 2}, False),    # fewer images than flat dimensions: SVD of the samples
    (150, 4096, {0: 1, 1: 1, 2: 1, 3: 1}, False),   # nothing pooled before flattening
], ids=["running-sums", "samples", "unpooled"])
def test_cut_scores_equal_the_scores_of_the_activations(four_channel_model, mnist_target, n, max_dim, pool,
                                                        flat_from_sums):
    split = Split(mnist_target.train.x[:n], mnist_target.train.y[:n])
    y = split.y.numpy()
    table = cut_scores(four_channel_model, split, chunk_size=64, max_dim=max_dim, progress=False).set_index("cut_point")
    features = own_activations(four_channel_model, split.x, pool, chunk=64)
    assert list(table.index) == [0, 1, 2, 3]
    assert all(features[(k, "gap")].shape[1] < n for k in pool)  # gap features always come from running sums
    assert all((features[(k, "flat")].shape[1] < n) == flat_from_sums for k in pool)
    for k in pool:
        gap, flat = features[(k, "gap")], features[(k, "flat")]
        assert (table.loc[k, "gap_dim"], table.loc[k, "flat_dim"]) == (gap.shape[1], flat.shape[1])
        for kind, f in (("gap", gap), ("flat", flat)):
            assert table.loc[k, f"logme_{kind}"] == pytest.approx(logme(f, y), rel=1e-8), (k, kind)
            assert table.loc[k, f"hscore_{kind}"] == pytest.approx(hscore(f, y), rel=1e-8), (k, kind)
            assert table.loc[k, f"hscore_shrink_{kind}"] == pytest.approx(hscore(f, y, shrinkage=True),
                                                                        rel=1e-8), (k, kind)


def test_running_sums_of_cut_scores_equal_formulas_that_share_no_code_with_them(four_channel_model, mnist_target):
    n, pool = 300, {0: 2, 1: 4, 2: 2, 3: 2}  # more images than the 196 flat dimensions
    split = Split(mnist_target.train.x[:n], mnist_target.train.y[:n])
    y = split.y.numpy()
    table = cut_scores(four_channel_model, split, chunk_size=64, max_dim=196, progress=False).set_index("cut_point")
    features = own_activations(four_channel_model, split.x, pool, chunk=64)
    assert max(f.shape[1] for f in features.values()) < n
    for (k, kind), f in features.items():
        f = f.astype(np.float64)
        resolvable = max(f.shape) * np.finfo(np.float64).eps  # numpy's matrix-rank rule
        for shrink in (False, True):
            assert table.loc[k, f"hscore{'_shrink' if shrink else ''}_{kind}"] == pytest.approx(
                reference_hscore(f, y, shrink, rcond=resolvable), rel=1e-8), (k, kind, shrink)
        # zero columns leave the evidence unchanged, and with as many columns as images LogME
        # comes from the samples' SVD instead of the running sums
        padded = np.hstack([f, np.zeros((n, n))])
        assert table.loc[k, f"logme_{kind}"] == pytest.approx(logme(padded, y), rel=1e-8), (k, kind)
