import numpy as np
import pandas as pd
import pytest

from functions.core.errors import DataError
from functions.analysis.stats import (as_frame, best_groups, compact_letters, holm, paired_tests, paired_wilcoxon,
                             rank_cut_points)

REPEATS = 10


def runs(cut, accuracies, percentage=0.1):
    return [{"sampled_percentage": percentage, "sampled_cut_point": cut, "repeat": r, "train_acc": 1.0,
             "test_acc": acc} for r, acc in enumerate(accuracies)]


@pytest.fixture
def study():
    """Cut 2 is clearly best, cut 3 clearly worst; cuts 0, 1 and the baseline differ by amounts of
    either sign that balance out (distinct magnitudes, so scipy's exact test applies)."""
    base = 0.80 + np.linspace(0, 0.05, REPEATS)  # repeats differ (data subsets), pairing removes that
    balanced = 0.001 * np.array([1, 2, -3, -4, 5, -6, -7, -8, 9, 10])
    other = 0.001 * np.array([-1.3, 2.6, 3.1, -4.7, -5.2, 6.9, -7.4, 8.8, -9.1, 0.2])
    records = runs(0, base + balanced) + runs(1, base) + runs(2, base + 0.10 + balanced) \
        + runs(3, base - 0.10 + other)
    return records, runs(-1, base + other)


def pair(tests, a, b):
    return tests[(tests.cut_a == a) & (tests.cut_b == b)].iloc[0]


# ----------------------------------------------------------------------------- Holm and Wilcoxon

def test_holm_matches_hand_computation():
    # sorted 0.01, 0.02, 0.03, 0.04 times 4, 3, 2, 1 -> 0.04, 0.06, 0.06 (monotone), 0.06
    np.testing.assert_allclose(holm([0.03, 0.01, 0.04, 0.02]), [0.06, 0.04, 0.06, 0.06])


def test_holm_caps_at_one_and_leaves_untested_out_of_the_family():
    # three tested: 0.01 * 3 = 0.03, 0.6 * 2 = 1.2 -> 1, 0.7 * 1 stays at the running maximum 1
    adjusted = holm([0.6, np.nan, 0.01, 0.7])
    np.testing.assert_allclose(adjusted[[0, 2, 3]], [1.0, 0.03, 1.0])
    assert np.isnan(adjusted[1])


def test_clearly_better_cut_gets_small_adjusted_p(study):
    tests = paired_tests(*study)
    best_vs_baseline = pair(tests, 2, -1)
    assert best_vs_baseline.n == REPEATS and best_vs_baseline.mean_diff == pytest.approx(0.10, abs=0.001)
    assert best_vs_baseline.p == pytest.approx(2 / 2 ** REPEATS)  # exact test, all ten differences positive
    assert best_vs_baseline.p_holm < 0.05 and best_vs_baseline.significant
    assert len(tests) == 10, "all pairs of baseline and four cut points"
    assert set(tests.cut_b) >= {-1} and (tests.cut_a > tests.cut_b).all()


def test_adjusted_p_values_are_holm_of_the_raw_ones_per_percentage(study):
    records, baselines = study
    other = [{**r, "sampled_percentage": 0.5} for r in records + baselines]
    tests = paired_tests(records + other, baselines)
    for _, family in tests.groupby("sampled_percentage"):
        np.testing.assert_allclose(family.p_holm, holm(family.p))


def test_ties_from_float_noise_count_as_ties():
    # 0.3 - 0.1 and 0.5 - 0.7 differ in size in floating point; as accuracies they are a gain and a
    # loss of the same size, so both get the average rank 1.5
    assert abs(0.3 - 0.1) != abs(0.5 - 0.7)
    statistic, p, _ = paired_wilcoxon([0.3, 0.5], [0.1, 0.7])
    assert statistic == 1.5 and p == 1.0


def test_identical_data_is_not_significant():
    same = np.linspace(0.7, 0.9, REPEATS)
    tests = paired_tests(runs(1, same) + runs(2, same), runs(-1, same))
    assert (tests.p == 1.0).all() and not tests.significant.any()
    assert tests.note.str.contains("all paired differences are zero").all()


def test_too_few_repeats_give_nan_and_an_explanation_not_a_crash():
    tests = paired_tests(runs(1, [0.9]) + runs(2, [0.8]))
    row = pair(tests, 2, 1)
    assert row.n == 1 and np.isnan(row.p) and np.isnan(row.p_holm) and not row.significant
    assert "at least 2" in row.note


def test_small_samples_say_that_no_p_below_alpha_is_possible():
    statistic, p, note = paired_wilcoxon([0.9, 0.91, 0.92], [0.8, 0.8, 0.8])
    assert p == pytest.approx(0.25) and "cannot reach p < 0.05" in note


def test_pairing_uses_only_repeats_present_for_both_cuts():
    tests = paired_tests(runs(1, [0.9, 0.8, 0.7]) + runs(2, [0.95, 0.85]))
    assert pair(tests, 2, 1).n == 2 and pair(tests, 2, 1).mean_diff == pytest.approx(0.05)


# ----------------------------------------------------------------------------- input checks

def test_missing_columns_are_named():
    with pytest.raises(DataError, match="test_acc"):
        as_frame([{"sampled_percentage": 0.1, "sampled_cut_point": 1, "repeat": 0}])


def test_duplicate_runs_are_refused():
    with pytest.raises(DataError, match="repeat"):
        as_frame(runs(1, [0.9]) + runs(1, [0.8]))


def test_dataframe_and_records_give_the_same_tests(study):
    records, baselines = study
    from_frame = paired_tests(pd.DataFrame(records + baselines))
    pd.testing.assert_frame_equal(from_frame, paired_tests(records, baselines))


# ----------------------------------------------------------------------------- groups and ranks

def test_compact_letters_for_a_chain():
    # A ~ B, B ~ C, but A differs from C
    assert compact_letters(["A", "B", "C"], [("A", "C")]) == {"A": "a", "B": "ab", "C": "b"}


def test_compact_letters_share_a_letter_exactly_when_not_different():
    items = ["A", "B", "C", "D"]
    different = {frozenset(p) for p in [("A", "C"), ("A", "D"), ("B", "D")]}
    letters = compact_letters(items, [tuple(p) for p in different])
    for i in items:
        for j in items:
            if i < j:
                share = bool(set(letters[i]) & set(letters[j]))
                assert share == (frozenset((i, j)) not in different), (i, j, letters)


def test_best_group_holds_the_best_cut_alone_when_it_is_clearly_better(study):
    groups = best_groups(*study).set_index("sampled_cut_point")
    assert groups.loc[2, "is_best"] and groups.loc[2, "letters"] == "a"
    assert groups.same_as_best.sum() == 1
    assert groups.loc[3, "p_vs_best"] < 0.05
    # cuts 0, 1 and the baseline are alike: one shared letter, different from the best's and the worst's
    assert groups.loc[0, "letters"] == groups.loc[1, "letters"] == groups.loc[-1, "letters"] == "b"
    assert groups.loc[3, "letters"] == "c"


def test_indistinguishable_cuts_join_the_best_group(study):
    records, baselines = study
    groups = best_groups([r for r in records if r["sampled_cut_point"] in (0, 1)], baselines)
    assert groups.same_as_best.all() and (groups.letters == "a").all()


def test_ranking_orders_cuts_by_mean_rank_over_complete_repeats(study):
    records, baselines = study
    ranks = rank_cut_points(records + runs(4, [0.5]), baselines)  # cut 4 has one repeat only
    assert ranks.sampled_cut_point.iloc[0] == 2 and ranks.mean_rank.iloc[0] == 1.0
    assert ranks.sampled_cut_point.iloc[-1] == 4
    assert (ranks.n_repeats == 1).all(), "only repeat 0 has every cut point"
    full = rank_cut_points(*study)
    assert full.set_index("sampled_cut_point").mean_rank.to_dict()[3] == 5.0
    assert full.mean_rank.sum() == pytest.approx(1 + 2 + 3 + 4 + 5)


def test_ties_share_the_average_rank():
    ranks = rank_cut_points(runs(1, [0.9, 0.8]) + runs(2, [0.9, 0.8])).set_index("sampled_cut_point")
    assert ranks.mean_rank.tolist() == [1.5, 1.5]
