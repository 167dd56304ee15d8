import numpy as np
import pandas as pd
import pytest
from scipy.stats import weightedtau

from functions.analysis.ranking import ranking_metrics, regret, top1_hit, weighted_tau
from functions.core.errors import DataError

MEASURED = [0.9, 0.8, 0.7, 0.6]   # models a-d, best first


# ----------------------------------------------------------------------------- weighted tau

def test_weighted_tau_is_one_for_the_same_ordering_and_minus_one_for_the_reverse():
    assert weighted_tau([4.0, 3.0, 2.0, 1.0], MEASURED) == pytest.approx(1.0)
    assert weighted_tau([-40, -30, -20, -10], MEASURED) == pytest.approx(-1.0)   # any monotone scale


def test_weighted_tau_by_hand_counts_disagreement_among_the_best_models_most():
    """Weights 1/(r_i + 1) + 1/(r_j + 1) over pairs, r the measured rank: they sum to 6.25 for four
    models; swapping the two best costs pair weight 1 + 1/2, swapping the two worst 1/3 + 1/4."""
    top_swapped = weighted_tau([3, 4, 2, 1], MEASURED)
    bottom_swapped = weighted_tau([4, 3, 1, 2], MEASURED)
    assert top_swapped == pytest.approx((6.25 - 2 * 1.5) / 6.25)
    assert bottom_swapped == pytest.approx((6.25 - 2 * (1 / 3 + 1 / 4)) / 6.25)


def test_weighted_tau_averages_both_rankings_as_scipy_and_the_published_evaluations_do():
    r = np.random.default_rng(0)
    measured, predicted = r.uniform(size=9), r.uniform(size=9)
    by_rank = {}
    for name, values in (("measured", measured), ("predicted", predicted)):
        rank = np.empty(9, int)
        rank[np.argsort(-values)] = np.arange(9)   # the best model has rank 0
        by_rank[name] = weightedtau(measured, predicted, rank=rank).statistic
    expected = weightedtau(measured, predicted).statistic
    assert weighted_tau(predicted, measured) == pytest.approx(expected, abs=1e-12)
    assert min(by_rank.values()) <= expected <= max(by_rank.values()) and by_rank["measured"] != by_rank["predicted"]
    assert weighted_tau(pd.Series(predicted), list(measured)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("predicted, measured", [([1.0], [0.5]), ([2, 2, 2], [0.1, 0.2, 0.3]), ([1, 2, 3], [0.5] * 3)],
                         ids=["one-model", "constant-predicted", "constant-measured"])
def test_weighted_tau_is_nan_without_an_ordering_to_agree_with(predicted, measured):
    assert np.isnan(weighted_tau(predicted, measured))


# ----------------------------------------------------------------------------- top-1 hit and regret

def test_top1_hit_and_regret_by_hand():
    assert top1_hit([0.1, 0.9, 0.3], [70, 75, 72]) and regret([0.1, 0.9, 0.3], [70, 75, 72]) == 0.0
    assert not top1_hit([0.1, 0.3, 0.9], [70, 75, 72])
    assert regret([0.1, 0.3, 0.9], [70, 75, 72]) == pytest.approx(3.0)
    assert regret(np.array([5, 1, 2]), np.array([0.5, 0.6, 0.9])) == pytest.approx(0.4)


def test_ties_in_measured_values_count_as_hits():
    assert top1_hit([1, 3, 2], [0.8, 0.8, 0.7]) and top1_hit([3, 1, 2], [0.8, 0.8, 0.7])
    assert regret([1, 3, 2], [0.8, 0.8, 0.7]) == 0.0


def test_a_tie_at_the_predicted_top_is_judged_by_its_worst_model():
    assert not top1_hit([2, 2, 1], [0.9, 0.7, 0.8])
    assert regret([2, 2, 1], [0.9, 0.7, 0.8]) == pytest.approx(0.2)
    assert top1_hit([2, 2, 1], [0.9, 0.9, 0.8])


def test_top1_hit_is_exactly_zero_regret():
    r = np.random.default_rng(1)
    for _ in range(50):
        predicted, measured = r.integers(0, 3, 4), r.integers(0, 3, 4)
        assert top1_hit(predicted, measured) == (regret(predicted, measured) == 0)
        assert regret(predicted, measured) >= 0


# ----------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("call, message", [
    (lambda f: f([1, 2, 3], [1, 2]), "3 predicted values but 2 measured"),
    (lambda f: f([1, np.nan, 3], [1, 2, 3]), "predicted hold 1 non-finite"),
    (lambda f: f([1, 2, 3], [1, 2, np.inf]), "measured hold 1 non-finite"),
    (lambda f: f(pd.Series([1.0, None]), [1, 2]), "predicted hold 1 non-finite"),
    (lambda f: f([[1, 2], [3, 4]], [1, 2]), "predicted must be 1-D"),
    (lambda f: f(["a", "b"], [1, 2]), "predicted must be"),
    (lambda f: f([], []), "empty"),
    (lambda f: f(pd.Series([1, 2], index=["a", "b"]), pd.Series([1, 2], index=["b", "a"])), "different indexes"),
])
@pytest.mark.parametrize("function", [weighted_tau, top1_hit, regret])
def test_bad_input_raises_a_data_error_naming_the_problem(function, call, message):
    with pytest.raises(DataError, match=message):
        call(function)


# ----------------------------------------------------------------------------- per task

def results_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "task": ["cifar"] * 4 + ["mnist"] * 3 + ["svhn"],
        "model": ["a", "b", "c", "d", "a", "b", "c", "a"],
        "score": [4.0, 3.0, 2.0, 1.0, 0.2, 0.1, 0.3, 9.0],
        "accuracy": [0.9, 0.8, 0.7, 0.6, 0.95, 0.97, 0.96, 0.5],
    })


def test_ranking_metrics_give_one_row_per_task_with_two_or_more_models():
    table = ranking_metrics(results_frame().sample(frac=1, random_state=0), "task", "model", "score", "accuracy")
    assert list(table.columns) == ["task", "weighted_tau", "top1_hit", "regret", "models"]
    assert list(table["task"]) == ["cifar", "mnist"]   # svhn has a single model
    assert list(table["models"]) == [4, 3]
    assert list(table["top1_hit"]) == [True, False]
    mnist = results_frame().query("task == 'mnist'").sort_values("model")
    assert table["regret"].tolist() == pytest.approx([0.0, 0.01])
    assert table["weighted_tau"].tolist() == pytest.approx([1.0, weighted_tau(mnist["score"], mnist["accuracy"])])


def test_ranking_metrics_of_only_single_model_tasks_is_an_empty_table():
    table = ranking_metrics(results_frame().query("task == 'svhn'"), "task", "model", "score", "accuracy")
    assert table.empty and list(table.columns) == ["task", "weighted_tau", "top1_hit", "regret", "models"]


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns=["accuracy"]), r"lacks columns \['accuracy'\]"),
    (lambda f: f.rename(columns={"task": "dataset", "model": "arch"}), r"lacks columns \['task', 'model'\]"),
    (lambda f: pd.concat([f, f.iloc[[0]]]), r"more than once for one task: \[\('cifar', 'a'\)\]"),
    (lambda f: f.assign(score=f["score"].where(f["model"] != "c")), "task 'cifar': score hold 1 non-finite"),
    (lambda f: f.assign(model=f["model"].where(f["model"] != "d")), "have no 'task' or 'model'"),
    (lambda f: f.to_numpy(), "DataFrame"),
])
def test_ranking_metrics_refuse_bad_frames(change, message):
    with pytest.raises(DataError, match=message):
        ranking_metrics(change(results_frame()), "task", "model", "score", "accuracy")
