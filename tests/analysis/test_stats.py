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


def test_tied_or_zero_differences_give_scipys_exact_permutation_p():
    import warnings
    from scipy.stats import wilcoxon
    rng = np.random.default_rng(3)
    checked = 0
    while checked < 12:  # scipy takes about 0.2 s per tied test
        n = int(rng.integers(3, 14))
        diff = np.round(rng.integers(-3, 4, size=n) / 100.0, 12)  # few values: ties and zeros
        if not np.count_nonzero(diff):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = wilcoxon(diff)
        assert paired_wilcoxon(diff, np.zeros(n))[:2] == (expected.statistic, expected.pvalue), diff
        checked += 1


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


def test_tables_follow_the_metric_asked_for_and_the_exact_alpha():
    """Both tables in full for val_acc, beside a test_acc that ranks the cuts the other way round.
    Five same-sign differences give the exact two-sided p = 2/32 = 0.0625, so with alpha = 0.0625
    the pair is not significant (significance is p < alpha)."""
    def arm(cut, val, test):
        return [{"sampled_percentage": 0.5, "sampled_cut_point": cut, "repeat": r, "val_acc": v, "test_acc": t}
                for r, (v, t) in enumerate(zip(val, test))]
    records = arm(0, [0.60, 0.61, 0.62, 0.63, 0.64], [0.9] * 5) + arm(1, [0.70, 0.72, 0.74, 0.76, 0.78], [0.1] * 5)
    tests = paired_tests(records, metric="val_acc", alpha=0.0625)
    assert tests.p.tolist() == [0.0625] and not tests.significant.any()
    groups = best_groups(records, metric="val_acc", alpha=0.0625)
    assert groups.columns.tolist() == ["sampled_percentage", "sampled_cut_point", "mean", "median", "n", "is_best",
                                       "p_vs_best", "same_as_best", "letters"]
    assert groups.sampled_cut_point.tolist() == [1, 0] and groups.is_best.tolist() == [True, False]
    np.testing.assert_allclose(groups["mean"], [0.74, 0.62])
    np.testing.assert_allclose(groups["median"], [0.74, 0.62])
    assert groups.n.tolist() == [5, 5] and groups.sampled_percentage.tolist() == [0.5, 0.5]
    assert np.isnan(groups.p_vs_best.iloc[0]) and groups.p_vs_best.iloc[1] == 0.0625
    assert groups.same_as_best.tolist() == [True, True] and groups.letters.tolist() == ["a", "a"]
    assert best_groups(records, metric="val_acc", alpha=0.07).same_as_best.tolist() == [True, False]
    ranks = rank_cut_points(records, metric="val_acc")
    assert ranks.columns.tolist() == ["sampled_percentage", "sampled_cut_point", "mean_rank", "mean", "n_repeats"]
    assert ranks.sampled_cut_point.tolist() == [1, 0] and ranks.mean_rank.tolist() == [1.0, 2.0]
    np.testing.assert_allclose(ranks["mean"], [0.74, 0.62])
    assert ranks.index.tolist() == [0, 1] and ranks.n_repeats.tolist() == [5, 5]
    assert ranks.sampled_percentage.tolist() == [0.5, 0.5]
    # records holding only the metric asked for, and a decoy test_acc alike for both cuts (p = 1 there)
    only_val = [{k: v for k, v in r.items() if k != "test_acc"} for r in records]
    assert best_groups(only_val, metric="val_acc").sampled_cut_point.tolist() == [1, 0]
    assert rank_cut_points(only_val, metric="val_acc").mean_rank.tolist() == [1.0, 2.0]
    assert paired_tests(only_val, metric="val_acc").p.tolist() == [0.0625]
    decoy = [{**r, "test_acc": 0.5} for r in records]
    assert best_groups(decoy, metric="val_acc", alpha=0.07).p_vs_best.iloc[1] == 0.0625
    assert best_groups(decoy, metric="val_acc", alpha=0.07).letters.tolist() == ["a", "b"]


def test_tied_means_keep_the_order_of_the_cut_points():
    """Equal means: the lower cut point is listed (and named best) first, in both tables."""
    records = runs(3, [0.5, 0.7]) + runs(1, [0.7, 0.5])
    assert best_groups(records).sampled_cut_point.tolist() == [1, 3]
    assert rank_cut_points(records).sampled_cut_point.tolist() == [1, 3]


def test_letters_run_out_after_52_groups():
    items = list(range(53))
    every_pair = [(i, j) for i in items for j in items if i < j]
    letters = compact_letters(items[:52], [(i, j) for i, j in every_pair if j < 52])
    assert len(set(letters.values())) == 52 and letters[51] == "Z"
    with pytest.raises(DataError, match="53 letter groups exceed the 52 letters"):
        compact_letters(items, every_pair)


def test_paired_test_table_in_full():
    """Cut 1 beats cut 0 by 0.01..0.05 in five repeats: statistic 0, exact p = 2/32, and with
    alpha = 0.05 the note says five differences cannot go below it; cut 2 shares no repeat."""
    records = runs(0, [0.50, 0.50, 0.50, 0.50, 0.50]) + runs(1, [0.51, 0.52, 0.53, 0.54, 0.55]) \
        + [{"sampled_percentage": 0.1, "sampled_cut_point": 2, "repeat": 9, "test_acc": 0.3}]
    tests = paired_tests(records)
    assert tests.columns.tolist() == ["sampled_percentage", "cut_a", "cut_b", "n", "mean_diff", "median_diff",
                                      "statistic", "p", "p_holm", "significant", "note"]
    row = pair(tests, 1, 0)
    assert (row.n, row.statistic, row.p) == (5, 0.0, 0.0625)
    assert row.mean_diff == pytest.approx(0.03) and row.median_diff == pytest.approx(0.03)
    assert row.note == "5 non-zero differences cannot reach p < 0.05 (smallest p 0.0625)"
    lonely = pair(tests, 2, 0)
    assert lonely.n == 0 and np.isnan(lonely.mean_diff) and np.isnan(lonely.median_diff) and np.isnan(lonely.p)
    assert pair(paired_tests(records, alpha=0.07), 1, 0).note == ""
    many = runs(0, [0.5] * 6) + runs(1, [0.51, 0.52, 0.53, 0.54, 0.55, 0.56])
    assert pair(paired_tests(many), 1, 0).note == ""  # six differences can reach 2/64 < 0.05


def test_wilcoxon_edge_cases_say_why():
    assert paired_wilcoxon([0.5, 0.6], [0.5, 0.6]) == (pytest.approx(np.nan, nan_ok=True), 1.0,
                                                       "all paired differences are zero")
    # differences of 3e-13 are float noise at 12 decimals: ties, not a consistent gain
    assert paired_wilcoxon(np.full(6, 0.5 + 3e-13), np.full(6, 0.5))[1:] == (1.0, "all paired differences are zero")
    statistic, p, note = paired_wilcoxon([0.6, 0.7, 0.8], [0.5, 0.5, 0.5], alpha=0.25)
    assert note == "3 non-zero differences cannot reach p < 0.25 (smallest p 0.25)"


def test_as_frame_types_and_keeps_rows_with_optional_fields_missing():
    records = [{"sampled_percentage": "0.5", "sampled_cut_point": 2.0, "repeat": 1.0, "test_acc": 0.5},
               {"sampled_percentage": 0.5, "sampled_cut_point": 3, "repeat": 1, "test_acc": 0.6, "status": "ok"},
               {"sampled_percentage": 0.5, "sampled_cut_point": 4, "repeat": 1, "test_acc": None}]
    frame = as_frame(pd.DataFrame(records[:1]), records[1:])
    assert frame.columns.tolist() == ["sampled_percentage", "sampled_cut_point", "repeat", "test_acc", "status"]
    assert frame.index.tolist() == [0, 1] and frame.sampled_cut_point.tolist() == [2, 3]
    assert frame["sampled_cut_point"].dtype == frame["repeat"].dtype == np.int64
    assert frame["sampled_percentage"].dtype == np.float64
    assert as_frame(runs(0, [0.5])).columns.tolist() == ["sampled_percentage", "sampled_cut_point", "repeat",
                                                          "train_acc", "test_acc"]


def test_duplicates_are_named_three_at_most():
    records = runs(0, [0.5] * 4) + runs(0, [0.6] * 4)
    with pytest.raises(DataError) as raised:
        as_frame(records)
    assert str(raised.value) == (
        "records repeat (percentage, cut point, repeat) [{'sampled_percentage': 0.1, 'sampled_cut_point': 0, "
        "'repeat': 0}, {'sampled_percentage': 0.1, 'sampled_cut_point': 0, 'repeat': 1}, {'sampled_percentage': "
        "0.1, 'sampled_cut_point': 0, 'repeat': 2}]; keep one run per repeat (were results of two sweeps "
        "concatenated?)")


def test_holm_takes_integer_p_values():
    np.testing.assert_array_equal(holm([0, 1]), [0.0, 1.0])
    assert holm(np.array([1, 0]))[0] == 1.0


def test_the_smallest_corrected_p_and_the_repeats_that_can_reach_alpha():
    from functions.analysis.stats import repeats_to_detect, smallest_holm_p
    assert smallest_holm_p(8, 7) == pytest.approx(7 * 2 / 256) and smallest_holm_p(2, 7) == 1.0
    assert repeats_to_detect(7) == 9  # 7 * 2 / 2**8 = 0.055, 7 * 2 / 2**9 = 0.027
    assert repeats_to_detect(1) == 6  # without a correction: 2 / 2**5 = 0.0625, 2 / 2**6 = 0.031


def test_the_repeats_for_power_come_from_the_measured_spread():
    from functions.analysis.stats import repeats_for_power
    half = 1 / np.sqrt(2)  # gains of mean 1 and standard deviation 1
    # a paired t-test of effect size 1 at alpha 0.05 reaches 80% power with 10 pairs (0.803 at 10,
    # 0.76 at 9); the Wilcoxon test needs pi / 3 times as many: 10.5, so 11
    assert repeats_for_power([1 - half, 1 + half], family=1) == 11
    # a large, steady gain needs only the repeats that can reach alpha at all
    assert repeats_for_power([0.10, 0.11, 0.12, 0.10], family=7) == 9
    assert repeats_for_power([0.01, -0.01, 0.02], family=7) > repeats_for_power([0.01, 0.012, 0.011], family=7)
    assert np.isnan(repeats_for_power([-0.01, 0.0], family=7)) and np.isnan(repeats_for_power([0.1], family=7))
    assert np.isinf(repeats_for_power([0.001, -0.0009, 0.0011, -0.001], family=7))


def test_gains_over_the_baseline_are_paired_with_an_interval_and_their_own_family():
    from functions.analysis.stats import gains_over_baseline, gains_verdict
    baseline = [0.50, 0.52, 0.49, 0.51, 0.50, 0.53, 0.48, 0.50, 0.51, 0.52]
    better = [b + 0.10 + 0.001 * r for r, b in enumerate(baseline)]  # +0.10 to +0.109, every repeat
    same = [b + (0.002 if r % 2 else -0.002) * (r + 1) for r, b in enumerate(baseline)]
    table = gains_over_baseline(runs(1, better) + runs(2, same), runs(-1, baseline), resamples=2000)
    gain = table.set_index("cut")
    assert gain.loc[1, "gain"] == pytest.approx(0.1045) and gain.loc[1, "n"] == REPEATS
    assert 0.10 <= gain.loc[1, "ci95_low"] < 0.1045 < gain.loc[1, "ci95_high"] <= 0.109
    assert gain.loc[1, "p"] == pytest.approx(2 / 2 ** 10)  # every difference of one sign: the exact minimum
    assert gain.loc[1, "p_holm"] == pytest.approx(2 * 2 / 2 ** 10) and gain.loc[1, "significant"]
    assert not gain.loc[2, "significant"] and gain.loc[2, "ci95_low"] < 0 < gain.loc[2, "ci95_high"]
    assert gain["detectable"].all() and gain.loc[1, "smallest_p_holm"] == pytest.approx(2 * 2 / 2 ** 10)
    verdict = gains_verdict(table, "test")
    assert verdict.startswith("test at 10% of the data: the best cut (1) gains +0.104 over the baseline")
    assert "significant after Holm's correction over 2 cuts" in verdict
    few = gains_over_baseline(runs(1, better[:3]), runs(-1, baseline[:3]), resamples=200)
    assert not few.loc[0, "detectable"]
    assert "the design cannot detect it: with 3 repeats the smallest p an exact Wilcoxon test gives is 0.25" \
        in gains_verdict(few, "test")
    assert gains_verdict(few, "test").endswith(
        "6 repeats could; about 6 would detect a gain of this size and spread with 80% power.")
    with pytest.raises(DataError, match="need baseline records"):
        gains_over_baseline(runs(1, better), None)


def test_the_verdict_reads_the_cut_that_validation_picks_not_the_largest_test_gain():
    from functions.analysis.stats import gains_over_baseline, gains_verdict
    baseline = [0.50, 0.52, 0.49, 0.51, 0.50, 0.53, 0.48, 0.50, 0.51, 0.52]
    tested_best = [dict(r, val_acc=0.6) for r in runs(1, [b + 0.10 for b in baseline])]
    validated = [dict(r, val_acc=0.7) for r in runs(2, [b + 0.05 + 0.001 * (i % 2) for i, b in enumerate(baseline)])]
    table = gains_over_baseline(tested_best + validated, [dict(r, val_acc=0.5) for r in runs(-1, baseline)],
                                resamples=200)
    assert table.set_index("cut")["validation"].to_dict() == {1: pytest.approx(0.6), 2: pytest.approx(0.7)}
    assert gains_verdict(table, "test").startswith("test at 10% of the data: the cut validation picks (2) gains +0.051 over")


def test_a_table_with_nothing_significant_becomes_one_line_saying_why(study):
    from functions.analysis.stats import pairs_verdict
    assert pairs_verdict(paired_tests(*study), "test") == ""  # cut 2 differs: the groups table says which
    few = paired_tests(runs(1, [0.5, 0.6, 0.7]) + runs(-1, [0.4, 0.5, 0.6]))
    assert pairs_verdict(few, "test") == (
        "test: no two cut points (the baseline among them) differ significantly at any fraction (alpha 0.05, "
        "Holm within each fraction); with at most 3 paired repeats the smallest p after Holm's correction over "
        "1 pairs is 0.25, so no difference could be significant.")
