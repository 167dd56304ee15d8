import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.optimize import minimize
from scipy.stats import multivariate_normal
from sklearn.covariance import LedoitWolf
from torch.utils.flop_counter import FlopCounterMode

from functions.config import Config, get_setup
from functions.core.errors import DataError
from functions.data.tasks import Split
from functions.models.study_cnn import build
from functions.analysis.transferability import (build_records, forward_flops, hscore, leep, logme, nce,
                                                plot_score_vs_accuracy, recommender_eval, save_records,
                                                validate_against_sweeps)
from functions.notebooks.study import cut_scores

rng = np.random.default_rng


def clusters(n: int, dim: int, num_classes: int, spread: float, seed: int = 0):
    """Class-mean plus Gaussian noise features; small spread: separable."""
    r = rng(seed)
    y = np.arange(n) % num_classes
    return r.standard_normal((num_classes, dim))[y] * 3 + spread * r.standard_normal((n, dim)), y


# ----------------------------------------------------------------------------- reference implementations

def reference_logme(f: np.ndarray, y: np.ndarray) -> float:
    """Evidence of y ~ N(0, F F^T / alpha + I / beta) maximised numerically over log alpha, log beta."""
    n = len(f)
    gram = f @ f.T
    per_class = []
    for c in range(y.max() + 1):
        target = (y == c).astype(float)
        neg = lambda p: -multivariate_normal.logpdf(target, np.zeros(n), gram * np.exp(-p[0]) + np.eye(n) * np.exp(-p[1]))
        best = min((minimize(neg, start, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12,
                                                                          "maxiter": 4000})
                    for start in ([0.0, 0.0], [3.0, 2.0], [-3.0, 1.0])), key=lambda r: r.fun)
        per_class.append(-best.fun / n)
    return float(np.mean(per_class))


def reference_hscore(f: np.ndarray, y: np.ndarray, shrinkage: bool, rcond: float = 1e-10) -> float:
    """The formula itself; ``rcond``: eigenvalues of cov(f) below rcond times the largest count as zero."""
    f = f.astype(float)
    class_means = np.stack([f[y == c].mean(0) for c in range(y.max() + 1)])[y]
    between = np.atleast_2d(np.cov(class_means.T, bias=True))
    if not shrinkage:
        covariance = np.atleast_2d(np.cov(f.T, bias=True))
        return float(np.trace(np.linalg.pinv(covariance, rcond=rcond, hermitian=True) @ between))
    lw = LedoitWolf().fit(f)
    return float(np.trace(np.linalg.inv(lw.covariance_) @ ((1 - lw.shrinkage_) * between)))


# ----------------------------------------------------------------------------- scores: known answers

@pytest.mark.parametrize("n, dim", [(300, 20), (30, 40)])
def test_separable_features_score_above_noise(n, dim):
    separable, y = clusters(n, dim, 3, spread=0.1)
    noise = rng(1).standard_normal((n, dim))
    assert logme(separable, y) > logme(noise, y)
    assert hscore(separable, y, shrinkage=True) > hscore(noise, y, shrinkage=True)
    if n > dim:
        assert hscore(separable, y) > hscore(noise, y)
    else:  # with fewer samples than dimensions the plain H-score saturates at C - 1 for any features
        assert hscore(separable, y) == pytest.approx(2.0) and hscore(noise, y) == pytest.approx(2.0)


def test_logme_matches_direct_evidence_maximisation_more_samples_than_dims():
    f, y = clusters(40, 5, 3, spread=2.0, seed=3)
    assert logme(f, y) == pytest.approx(reference_logme(f, y), abs=1e-6)


def test_logme_matches_direct_evidence_maximisation_rank_deficient_few_samples():
    r = rng(4)
    f = r.standard_normal((14, 3)) @ r.standard_normal((3, 30))   # 14 samples, 30 dims, rank 3
    y = np.arange(14) % 2
    assert logme(f, y) == pytest.approx(reference_logme(f, y), abs=1e-6)


def test_logme_ignores_feature_scale_and_accepts_tensors():
    f, y = clusters(80, 6, 4, spread=1.0)
    assert logme(f * 1000.0, y) == pytest.approx(logme(f, y), abs=1e-9)
    assert logme(torch.from_numpy(f).float(), torch.from_numpy(y)) == pytest.approx(logme(f, y), abs=1e-5)


@pytest.mark.parametrize("shrinkage", [False, True])
@pytest.mark.parametrize("n, dim", [(200, 12), (25, 40)])
def test_hscores_match_direct_formula(n, dim, shrinkage):
    f, y = clusters(n, dim, 3, spread=1.5, seed=5)
    assert hscore(f, y, shrinkage=shrinkage) == pytest.approx(reference_hscore(f, y, shrinkage), rel=1e-6)


def test_shrinkage_hscore_is_finite_with_fewer_samples_than_dimensions():
    f, y = clusters(10, 500, 2, spread=1.0)
    assert np.isfinite(hscore(f, y, shrinkage=True))


@pytest.mark.parametrize("n", [50, 8])
@pytest.mark.parametrize("make", [
    lambda n: np.zeros((n, 20)),
    lambda n: np.ones((n, 20)),
    lambda n: np.repeat(rng(0).standard_normal((n, 1)), 20, axis=1),   # rank one
    lambda n: np.hstack([rng(1).standard_normal((n, 3)), np.zeros((n, 17))]),
], ids=["zeros", "constant", "rank-one", "zero-columns"])
def test_constant_and_rank_deficient_features_give_finite_scores(make, n):
    f, y = make(n), np.arange(n) % 2
    for value in (logme(f, y), hscore(f, y), hscore(f, y, shrinkage=True)):
        assert np.isfinite(value)


def test_leep_of_a_head_that_predicts_the_target_exactly_is_zero():
    y = np.arange(30) % 3
    assert leep(np.eye(3)[y], y) == pytest.approx(0.0, abs=1e-12)


def test_leep_prefers_an_informative_head():
    y = np.arange(300) % 3
    informative = 0.8 * np.eye(3)[y] + 0.2 / 3
    uninformative = rng(0).dirichlet(np.ones(3), size=300)
    assert leep(informative, y) > leep(uninformative, y)


def test_nce_of_independent_source_labels_is_minus_the_label_entropy():
    r = rng(0)
    y, z = r.integers(0, 3, 20000), r.integers(0, 4, 20000)
    p = np.bincount(y) / len(y)
    assert nce(z, y) == pytest.approx(float((p * np.log(p)).sum()), abs=5e-3)


def test_nce_of_perfectly_predictive_source_labels_is_zero():
    z = np.arange(60) % 6          # six source classes, each inside one target class
    assert nce(z, z // 2) == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------- bad input

GOOD_F, GOOD_Y = clusters(20, 4, 2, spread=1.0)


@pytest.mark.parametrize("call, message", [
    (lambda: logme(GOOD_F, GOOD_Y[:-1]), "one label per sample"),
    (lambda: hscore(GOOD_F, np.zeros(20, int)), "at least two"),
    (lambda: logme(np.where(np.eye(20, 4) > 0, np.nan, GOOD_F), GOOD_Y), "non-finite"),
    (lambda: hscore(GOOD_F, np.where(GOOD_Y == 1, 2, 0)), "0..C-1"),
    (lambda: logme(GOOD_F, GOOD_Y - 1), "negative"),
    (lambda: logme(GOOD_F, GOOD_Y.astype(float)), "integers"),
    (lambda: logme(GOOD_F[:, 0], GOOD_Y), "2-D"),
    (lambda: hscore(GOOD_F.reshape(20, 2, 2), GOOD_Y), "2-D"),
    (lambda: logme(GOOD_F, GOOD_Y.reshape(10, 2)), "1-D"),
    (lambda: leep(np.full((20, 3), 0.5), GOOD_Y), "probabilities"),
    (lambda: leep(np.eye(2)[GOOD_Y][:-1], GOOD_Y), "one label per sample"),
    (lambda: nce(GOOD_Y[:-1], GOOD_Y), "one label per sample"),
    (lambda: nce(GOOD_Y, np.zeros(20, int)), "at least two"),
])
def test_bad_input_raises_a_data_error_naming_the_problem(call, message):
    with pytest.raises(DataError, match=message):
        call()


# ----------------------------------------------------------------------------- cut points

@pytest.fixture(scope="module")
def tiny_model():
    return build(Config(num_channels=8, depth=3), (1, 28, 28), 5, seed=0)


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
    assert (table["leep"] == leep(probs, split.y.numpy())).all()
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


# ----------------------------------------------------------------------------- validation, records, recommender

def hand_made_records(accuracy_by_percentage: dict) -> list[dict]:
    return [{"lr": 0.001, "sampled_percentage": p, "sampled_cut_point": cut, "repeat": r,
             "train_acc": 1.0, "test_acc": acc + 0.001 * r}
            for p, accs in accuracy_by_percentage.items() for cut, acc in enumerate(accs) for r in range(2)] + \
        [{"lr": 0.001, "sampled_percentage": 0.1, "sampled_cut_point": -1, "repeat": 0, "train_acc": 1.0,
          "test_acc": 0.99}]


def test_validation_gives_tau_one_for_a_score_monotone_in_accuracy():
    records = hand_made_records({0.1: [0.5, 0.6, 0.7, 0.8], 0.01: [0.8, 0.7, 0.6, 0.65]})
    scores = pd.DataFrame({"cut_point": [0, 1, 2, 3], "logme_flat": [-1.0, -0.5, 0.0, 0.2],
                           "leep": [-0.3] * 4})
    table = validate_against_sweeps(scores, records, tolerance={0.01: {0, 3}}).set_index(["percentage", "score"])
    assert table.loc[(0.1, "logme_flat"), "kendall_tau"] == pytest.approx(1.0)
    assert table.loc[(0.1, "logme_flat"), "spearman_rho"] == pytest.approx(1.0)
    assert table.loc[(0.1, "logme_flat"), "top_cut_ok"]
    # at 1% the best cut is 0 but cut 3 (the score's top) is within the tolerance group
    assert table.loc[(0.01, "logme_flat"), "best_cut"] == 0
    assert table.loc[(0.01, "logme_flat"), "top_cut_ok"]
    assert table.loc[(0.01, "logme_flat"), "kendall_tau"] < 0
    # a score constant over cuts has neither a correlation nor a top cut
    assert np.isnan(table.loc[(0.1, "leep"), "kendall_tau"]) and not table.loc[(0.1, "leep"), "top_cut_ok"]


def test_validation_rejects_records_without_the_needed_keys():
    with pytest.raises(DataError, match="sampled_cut_point"):
        validate_against_sweeps(pd.DataFrame({"cut_point": [0]}), [{"sampled_percentage": 0.1, "test_acc": 0.5}])


def test_plot_saves_a_labelled_png(tmp_path):
    records = hand_made_records({0.1: [0.5, 0.6, 0.7], 0.01: [0.6, 0.5, 0.4]})
    scores = pd.DataFrame({"cut_point": [0, 1, 2], "hscore_gap": [1.0, 2.0, 3.0]})
    fig = plot_score_vs_accuracy(scores, records, score="hscore_gap", path=tmp_path / "fig.png")
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) == 2 and fig.axes[0].get_ylabel() == "mean test accuracy"
    assert "Software" not in (tmp_path / "fig.png").read_bytes()[:400].decode("latin1")


def test_forward_flops_count_conv_and_linear_multiply_adds(tiny_model):
    # convs 1->8 and 8->8 at 28x28, pool, 8->8 at 14x14, then a linear layer 8*14*14 -> 5
    expected = 2 * (9 * 8 * 784 + 8 * 9 * 8 * 784 + 8 * 9 * 8 * 196 + 1568 * 5)
    assert forward_flops(tiny_model) == expected
    with FlopCounterMode(display=False) as counter:
        tiny_model(torch.zeros(1, 1, 28, 28))
    assert counter.get_total_flops() == expected


SETUPS_OF_RECORDS = [("MNIST", "regular"), ("FashionMNIST", "regular"), ("MNIST_to_FashionMNIST", "cross")]


def three_setups_records(model) -> list:
    """Records of three setups whose logme_flat follows the accuracy and whose hscore_gap is noise."""
    cfg = Config(num_channels=8, depth=3)
    frames = []
    for i, (folder, name) in enumerate(SETUPS_OF_RECORDS):
        accuracy = {0.01: [0.5 + 0.05 * c + 0.01 * i for c in range(4)],
                    0.1: [0.9 - 0.04 * c - 0.01 * i for c in range(4)]}
        scores = {p: pd.DataFrame({"cut_point": range(4), "logme_flat": np.array(acc) * 2 - 1,
                                   "hscore_gap": rng(i).standard_normal(4)}) for p, acc in accuracy.items()}
        frames.append(build_records(scores, hand_made_records(accuracy), setup=get_setup(folder, name), cfg=cfg,
                                    model=model, n_target_train=27000, source_test_acc=0.98))
    return frames


def test_recommend_command_collects_every_folders_records(tiny_model, tmp_path):
    for (folder, name), frame in zip(SETUPS_OF_RECORDS, three_setups_records(tiny_model)):
        save_records(frame, tmp_path / "root" / folder / "results" / f"transferability_records_{name}_FR.csv")
    done = subprocess.run([sys.executable, "-m", "functions", "recommend", "--out", str(tmp_path / "out")],
                          env={**os.environ, "TRANSFER_OUTPUT_ROOT": str(tmp_path / "root")},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "24 records of 3 setups" in done.stdout
    assert len(pd.read_csv(tmp_path / "out" / "transferability_records.csv")) == 24
    summary = json.loads((tmp_path / "out" / "transferability_recommender.json").read_text())
    methods = {m["method"]: m for m in summary["methods"]}
    assert methods["logme_flat"]["kendall_tau"] == pytest.approx(1.0) and methods["hscore_gap"]["mae"] is None
    assert summary["setups"] == sorted(f"{f}/{n}" for f, n in SETUPS_OF_RECORDS)
    lines = done.stdout.splitlines()
    header = lines[1].split()
    printed = {row[0]: dict(zip(header, row)) for row in (line.split() for line in lines[2:2 + len(methods)])}
    assert set(printed) == set(methods) and header[:2] == ["method", "kind"]
    for name, method in methods.items():  # the printed table rounds to 3 decimals, the file to 6
        assert printed[name]["kind"] == method["kind"]
        for column in header[2:]:
            value, cell = method[column], printed[name][column]
            if value is None:
                assert cell == "NaN", (name, column)
            else:
                assert float(cell) == pytest.approx(value, abs=5e-4 + 1e-9), (name, column)


def test_recommend_command_without_records_says_what_to_run(tmp_path):
    done = subprocess.run([sys.executable, "-m", "functions", "recommend", "--out", str(tmp_path)],
                          env={**os.environ, "TRANSFER_OUTPUT_ROOT": str(tmp_path)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "transferability notebooks" in done.stderr


def test_records_and_leave_one_setup_out_recommender(tiny_model, tmp_path):
    frames = three_setups_records(tiny_model)
    records = pd.concat(frames, ignore_index=True)
    assert len(records) == 3 * 2 * 4
    assert set(records["domain"]) == {"same-dataset", "cross-dataset"}
    assert (records["flops"] == forward_flops(tiny_model)).all() and (records["runs"] == 2).all()
    assert records.loc[0, "n_train"] == pytest.approx(270)
    save_records(records, tmp_path / "records.csv")
    assert len(pd.read_csv(tmp_path / "records.csv")) == len(records)
    summary = recommender_eval(records).set_index("method")
    assert summary.loc["logme_flat", "kendall_tau"] == pytest.approx(1.0)
    assert summary.loc["logme_flat", "top1_rate"] == pytest.approx(1.0)
    assert np.isfinite(summary.loc["recommender", ["mae", "rmse", "kendall_tau"]].astype(float)).all()
    assert "logme_flat" in summary.attrs["features"]
    with pytest.raises(DataError, match="two setups"):
        recommender_eval(frames[0])


def linear_records(offset: float) -> pd.DataFrame:
    """Three setups of one architecture, one percentage and cut points 0-3, whose logme_flat takes the
    same four values in each: accuracy is 0.5 + 0.1 * logme_flat in the first two setups and
    ``offset`` more in the third."""
    setups = ["MNIST/regular", "FashionMNIST/regular", "CIFAR/regular"]
    score = [-1.0, -0.5, 0.0, 0.5]
    rows = [{"setup": setup, "mode": "FR", "percentage": 0.01, "n_train": 270, "cut_point": cut,
             "logme_flat": score[cut], "test_acc": 0.5 + 0.1 * score[cut] + (offset if i == 2 else 0.0),
             "depth": 3, "num_channels": 8, "kernel_size": 3, "params": 9000, "flops": 2_000_000,
             "source_test_acc": 0.98, "domain": "same-dataset", "n_target_train": 27000}
            for i, setup in enumerate(setups) for cut in range(4)]
    return pd.DataFrame(rows)


def test_recommender_predicts_each_setup_from_the_other_setups_only():
    """A linear model with an intercept, fitted on setups that share the held-out setup's feature
    values, predicts on average the training setups' mean accuracy, whatever its penalty.  Held out,
    the third setup is then predicted d too low on average, and each of the first two d/2 too high
    (the mean of the other one and the third).  The errors within a setup keep one sign here, so the
    mean absolute error over the 12 rows is (4 d + 8 d/2) / 12 = 2d/3; a fit that also saw the held-out
    setup would be off by d/3 and 2d/3 instead: 4d/9."""
    d = 0.3
    summary = recommender_eval(linear_records(d)).set_index("method")
    assert {"logme_flat", "cut_point"} <= set(summary.attrs["features"])
    assert summary.loc["recommender", "mae"] == pytest.approx(2 * d / 3, abs=1e-9)
    assert summary.loc["recommender", "rmse"] >= summary.loc["recommender", "mae"]
    assert summary.loc["recommender", "kendall_tau"] == pytest.approx(1.0)
    assert summary.loc["recommender", "groups"] == 3
    # without the offset every held-out setup lies on the line of the others
    assert recommender_eval(linear_records(0.0)).set_index("method").loc["recommender", "mae"] < 1e-3


def test_verdict_names_the_best_ranking_score_and_whether_it_found_the_best_cut():
    from functions.notebooks.study import transferability_verdict
    validation = pd.DataFrame({
        "percentage": [0.01, 0.01, 0.01, 0.05], "score": ["logme_flat", "hscore_flat", "leep", "logme_flat"],
        "kendall_tau": [0.4, 0.6, np.nan, 0.7], "score_top_cut": pd.array([5, pd.NA, pd.NA, 2], dtype="Int64"),
        "best_cut": [4, 4, 4, 3], "top_cut_ok": [True, False, False, False]})
    lines = transferability_verdict(validation).splitlines()
    assert lines[0].startswith("0.01 of the data: hscore_flat ranks the cut points best (Kendall tau 0.60)")
    assert "ties several cut points" in lines[0] and "1 of 2 scores" in lines[0]
    assert "its top cut 2 missed the measured best cut 3" in lines[1]


def test_source_head_scores_name_their_source_argument_and_skip_unpredicted_source_classes():
    y = np.array([0, 0, 1, 1])
    with pytest.raises(DataError, match=r"^source_probs must be 2-D"):
        leep(np.full(4, 0.5), y)
    with pytest.raises(DataError, match=r"^source_probs rows must be probabilities \(non-negative, summing to 1\); "
                                        r"apply softmax to the source head's logits$"):
        leep(np.full((4, 2), 0.6), y)
    with pytest.raises(DataError, match=r"^source_labels must be 1-D"):
        nce(np.zeros((4, 1), dtype=int), y)
    probs = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.2, 0.8, 0.0], [0.1, 0.9, 0.0]])
    assert leep(probs, y) == pytest.approx(leep(probs[:, :2], y), abs=1e-15)  # source class 2: never predicted
    assert np.isfinite(leep(probs[:, :2] * (1 + 5e-4), y))  # rows summing to 1 within 1e-3 are probabilities
