import warnings

import numpy as np
import pytest
import torch
from scipy.linalg import eigh
from scipy.special import softmax
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning

from functions.analysis.transferability import nleep, sfda
from functions.analysis.transferability.sfda_nleep import _principal_components, _regularised_fda
from functions.core.errors import DataError

rng = np.random.default_rng


def clusters(n: int, dim: int, num_classes: int, spread: float, seed: int = 0):
    """Class-mean plus Gaussian noise features; small spread: separable."""
    r = rng(seed)
    y = np.arange(n) % num_classes
    return r.standard_normal((num_classes, dim))[y] * 3 + spread * r.standard_normal((n, dim)), y


def shuffled(y: np.ndarray, seed: int = 1) -> np.ndarray:
    return rng(seed).permutation(y)


# ----------------------------------------------------------------------------- SFDA by the paper's recipe

def standardise(f: np.ndarray) -> np.ndarray:
    sd = f.std(0)
    return (f - f.mean(0)) / np.where(sd > 0, sd, 1.0)


def class_statistics(x: np.ndarray, y: np.ndarray):
    classes = range(y.max() + 1)
    priors = np.array([np.mean(y == c) for c in classes])
    means = np.stack([x[y == c].mean(0) for c in classes])
    within = sum(p * np.atleast_2d(np.cov(x[y == c].T, bias=True)) for p, c in zip(priors, classes))
    return priors, means, within, np.atleast_2d(np.cov(x.T, bias=True))


def shrunk_within(within: np.ndarray, a=None):
    d = len(within)
    a = np.exp(-5 * np.linalg.eigvalsh(within).max()) if a is None else a
    return (1 - a) * within + a * np.trace(within) / d * np.eye(d), a


def reference_fda(x: np.ndarray, y: np.ndarray, a=None):
    """Fisher space as the paper describes it: generalised eigenvectors of (S_B, S_W shrunk), sorted by
    decreasing eigenvalue, coef = means V V^T, intercept -0.5 diag(means coef^T) + log priors."""
    priors, means, within, total = class_statistics(x, y)
    shrunk, a = shrunk_within(within, a)
    values, v = eigh(total - shrunk, shrunk)
    v = v[:, np.argsort(values)[::-1]]
    coef = means @ v @ v.T
    intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
    return softmax(x @ coef.T + intercept, axis=1), a, means


def reference_sfda(f: np.ndarray, y: np.ndarray) -> float:
    x = standardise(f)
    probs, a, means = reference_fda(x, y)
    p_true = softmax(probs, axis=1)[np.arange(len(y)), y][:, None]
    probs, _, _ = reference_fda(p_true * x + (1 - p_true) * means[y], y, a)
    return float(probs[np.arange(len(y)), y].mean())


# Six classes in two dimensions: every direction separates classes, so S_W is small next to S_T (in
# standardised units) and the shrinkage is strong, yet classes overlap, so probabilities are not all 0 or 1.
OVERLAPPING = dict(n=120, dim=2, num_classes=6, spread=1.0, seed=3)


def test_sfda_first_stage_is_the_gaussian_posterior_with_the_shrunk_within_class_scatter():
    x, y = clusters(**OVERLAPPING)
    x = standardise(x)
    priors, means, within, _ = class_statistics(x, y)
    shrunk, a = shrunk_within(within)
    assert 0.3 < a < 0.95   # the shrinkage matters in this example
    likelihood = np.stack([multivariate_normal(means[c], shrunk).pdf(x) for c in range(6)], axis=1) * priors
    probs, shrinkage, _ = _regularised_fda(x, y, 6)
    assert probs.max(1).min() < 0.6
    assert shrinkage == pytest.approx(a, rel=1e-10)
    np.testing.assert_allclose(probs, likelihood / likelihood.sum(1, keepdims=True), atol=1e-7)


@pytest.mark.parametrize("n, dim, num_classes, spread", [(120, 2, 6, 1.0), (90, 2, 3, 1.5), (120, 3, 4, 1.5)])
def test_sfda_matches_the_papers_fisher_space_recipe(n, dim, num_classes, spread):
    """Examples where the shrinkage (and reusing it in stage two) moves the score by 1e-4 or more."""
    f, y = clusters(n, dim, num_classes, spread, seed=3)
    f[:, 0] *= 50.0   # features of different units: standardisation must come first
    assert sfda(f, y) == pytest.approx(reference_sfda(f, y), abs=1e-6)


# ----------------------------------------------------------------------------- both scores: known behaviour

@pytest.mark.parametrize("score", [sfda, nleep])
@pytest.mark.parametrize("num_classes", [2, 3])
def test_separated_blobs_score_above_the_same_blobs_with_shuffled_labels(score, num_classes):
    f, y = clusters(150, 8, num_classes, spread=1.0)
    assert score(f, y) > score(f, shuffled(y)) + 0.2


def test_sfda_is_a_probability_near_one_for_separated_classes_and_lower_for_overlapping_ones():
    f, y = clusters(150, 8, 3, spread=0.5)
    assert sfda(f, y) == pytest.approx(1.0, abs=1e-6)
    overlapping = sfda(*clusters(150, 8, 3, spread=8.0))
    assert 1 / 3 < overlapping < sfda(*clusters(150, 8, 3, spread=4.0)) < 1.0


@pytest.mark.parametrize("n", [50, 8])
@pytest.mark.parametrize("make", [
    lambda n: np.zeros((n, 20)),
    lambda n: np.ones((n, 20)),
    lambda n: np.repeat(rng(0).standard_normal((n, 1)), 20, axis=1),   # rank one
    lambda n: np.hstack([rng(1).standard_normal((n, 3)), np.zeros((n, 17))]),
    lambda n: rng(2).standard_normal((n, 200)),                          # more dimensions than samples
], ids=["zeros", "constant", "rank-one", "zero-columns", "wide"])
@pytest.mark.parametrize("num_classes", [2, 3])
def test_sfda_is_a_finite_probability_for_constant_and_rank_deficient_features(make, n, num_classes):
    value = sfda(make(n), np.arange(n) % num_classes)
    assert np.isfinite(value) and 0 < value <= 1


def test_sfda_of_constant_features_is_the_chance_of_guessing_by_the_priors():
    y = np.array([0] * 6 + [1] * 3 + [2])
    assert sfda(np.full((10, 5), 7.0), y) == pytest.approx(0.6 ** 2 + 0.3 ** 2 + 0.1 ** 2, abs=1e-12)


def test_sfda_ignores_feature_units_and_offsets_and_accepts_tensors():
    f, y = clusters(**OVERLAPPING)
    scaled = f * [0.01, 100.0] + [-1e3, 1e3]
    assert sfda(scaled, y) == pytest.approx(sfda(f, y), abs=1e-9)
    assert sfda(torch.from_numpy(f).float(), torch.from_numpy(y)) == pytest.approx(sfda(f, y), abs=1e-5)


# ----------------------------------------------------------------------------- N-LEEP

def test_nleep_is_deterministic_for_a_seed_and_at_most_zero():
    f, y = clusters(120, 10, 3, spread=3.0)
    first = nleep(f, y, seed=7)
    assert nleep(f, y, seed=7) == first
    assert np.isfinite(first) and first <= 0.0


def test_nleep_of_pure_mixture_components_is_zero_and_of_no_variance_is_minus_the_label_entropy():
    f, y = clusters(150, 8, 3, spread=0.2)
    assert nleep(f, y) == pytest.approx(0.0, abs=1e-9) and nleep(f, y) <= 0.0
    labels = np.array([0] * 6 + [1] * 3 + [2])
    p = np.array([0.6, 0.3, 0.1])
    assert nleep(np.ones((10, 4)), labels) == pytest.approx(float(p @ np.log(p)), abs=1e-12)


def test_nleep_ignores_feature_scale_and_offset():
    f, y = clusters(120, 10, 3, spread=3.0)
    assert nleep(f * 1e4 - 50.0, y) == pytest.approx(nleep(f, y), abs=1e-6)


def test_nleep_caps_the_components_at_the_distinct_samples():
    """Two distinct points, 10 components asked for: the mixture has two pure components."""
    f = np.repeat(np.array([[0.0, 1.0], [3.0, -2.0]]), 10, axis=0)
    y = np.repeat([0, 1], 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        assert nleep(f, y) == pytest.approx(0.0, abs=1e-9)
    few = nleep(*clusters(6, 4, 3, spread=1.0))   # 15 components asked for, 6 samples
    assert np.isfinite(few) and few <= 0.0


def test_pca_keeps_the_fewest_axes_holding_the_asked_variance_at_unit_mean_variance():
    f = rng(0).standard_normal((4000, 3)) * [3.0, 2.0, 1.0]   # variance shares 9/14, 4/14, 1/14
    for variance, axes in [(0.5, 1), (0.8, 2), (0.95, 3), (1.0, 3)]:
        z = _principal_components(f, variance)
        assert z.shape == (4000, axes)
        assert z.var(0).mean() == pytest.approx(1.0, rel=1e-9)
    wide = _principal_components(rng(1).standard_normal((10, 40)), 1.0)
    assert wide.shape == (10, 9)   # ten centred samples span nine axes
    assert _principal_components(np.ones((5, 3)), 0.8) is None


# ----------------------------------------------------------------------------- bad input

GOOD_F, GOOD_Y = clusters(20, 4, 2, spread=1.0)


@pytest.mark.parametrize("score", [sfda, nleep])
@pytest.mark.parametrize("call, message", [
    (lambda s: s(GOOD_F[:, 0], GOOD_Y), "features must be 2-D"),
    (lambda s: s(GOOD_F, GOOD_Y[:-1]), "19 labels; give exactly one label per sample"),
    (lambda s: s(np.where(np.eye(20, 4) > 0, np.nan, GOOD_F), GOOD_Y), "features contain 4 non-finite"),
    (lambda s: s(GOOD_F, np.zeros(20, int)), "labels hold 1 class"),
    (lambda s: s(GOOD_F, GOOD_Y.astype(float)), "labels must be integers"),
])
def test_bad_input_raises_a_data_error_naming_the_argument(score, call, message):
    with pytest.raises(DataError, match=message):
        call(score)


@pytest.mark.parametrize("kwargs, message", [
    ({"variance": 0.0}, "variance"), ({"variance": 1.5}, "variance"),
    ({"components_per_class": 0}, "components_per_class"), ({"components_per_class": 2.5}, "components_per_class"),
])
def test_nleep_refuses_bad_parameters(kwargs, message):
    with pytest.raises(DataError, match=message):
        nleep(GOOD_F, GOOD_Y, **kwargs)
