"""LogME, H-scores, LEEP and NCE against formulas that share no code with them, and their refusals."""
import numpy as np
import pytest
import torch
from functions.core.errors import DataError
from functions.analysis.transferability import hscore, leep, logme, nce
from score_references import clusters, reference_hscore, reference_logme, rng


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
