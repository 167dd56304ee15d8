"""Which cut points differ?  Paired tests, Holm correction, groups and rankings of results records.

Runs of one percentage pair by ``repeat``: repeat r of every cut point and of the baseline
trained on the same data subset, so differences are taken within a repeat (paired Wilcoxon
signed-rank test).  All pairs of cut points of one percentage, baseline included (cut -1),
form one family for the Holm correction.

Every function takes results records (dicts with sampled_percentage, sampled_cut_point,
repeat and the metric, e.g. test_acc) or a DataFrame of them, plus optional baseline records.
"""
from __future__ import annotations

import itertools
import string
import warnings

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from ..core.errors import DataError

KEYS = ("sampled_percentage", "sampled_cut_point", "repeat")


def as_frame(records, baseline_records=None, metric: str = "test_acc") -> pd.DataFrame:
    """One table of run records (baseline rows have cut -1); rows without the metric are dropped.

    Refuses missing columns and repeated (percentage, cut point, repeat) rows, which would make
    the pairing ambiguous.
    """
    parts = [pd.DataFrame(r) if not isinstance(r, pd.DataFrame) else r
             for r in (records, baseline_records) if r is not None]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    missing = [k for k in (*KEYS, metric) if k not in frame.columns]
    if missing:
        raise DataError(f"records lack column(s) {missing}; give results records "
                        f"(dicts with {list(KEYS)} and {metric!r}) or a DataFrame of them")
    frame = frame.dropna(subset=[metric]).astype({"sampled_cut_point": int, "repeat": int,
                                                  "sampled_percentage": float, metric: float})
    duplicated = frame.duplicated(list(KEYS), keep=False)
    if duplicated.any():
        rows = frame.loc[duplicated, list(KEYS)].drop_duplicates().head(3).to_dict("records")
        raise DataError(f"records repeat (percentage, cut point, repeat) {rows}; keep one run per repeat "
                        f"(were results of two sweeps concatenated?)")
    return frame.reset_index(drop=True)


def holm(pvalues) -> np.ndarray:
    """Holm step-down adjusted p-values; NaN entries are untested and stay NaN outside the family."""
    p = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    running = 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[index]))
        adjusted[index] = running
    return adjusted


def paired_wilcoxon(a, b, alpha: float = 0.05) -> tuple[float, float, str]:
    """(statistic, p, note) of a two-sided Wilcoxon signed-rank test of the paired samples a, b.

    Untestable cases do not raise: fewer than 2 pairs gives p = NaN, all-zero differences give
    p = 1.0; the note says why, and also when n is too small for any p below ``alpha``.
    Accuracies are fractions k/N, so differences are rounded to 12 decimals: float noise must
    neither break ties nor turn equal accuracies into tiny differences.  With ties or zeros and
    n <= 13, scipy computes the p-value by exhaustive permutation (about a second per test).
    """
    diff = np.round(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), 12)
    if len(diff) < 2:
        return np.nan, np.nan, f"{len(diff)} paired repeat(s); a test needs at least 2"
    nonzero = int(np.count_nonzero(diff))
    if nonzero == 0:
        return np.nan, 1.0, "all paired differences are zero"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scipy's small-sample notes; the note below says it
        result = wilcoxon(diff)
    smallest = 2.0 / 2 ** nonzero
    note = f"{nonzero} non-zero differences cannot reach p < {alpha} (smallest p {smallest:.3g})" \
        if smallest >= alpha else ""
    return float(result.statistic), float(result.pvalue), note


def paired_tests(records, baseline_records=None, metric: str = "test_acc", alpha: float = 0.05) -> pd.DataFrame:
    """Wilcoxon tests of every pair of cut points (baseline = -1 included) per percentage.

    One row per pair with ``cut_a > cut_b`` (so the baseline is always ``cut_b``):
    sampled_percentage, cut_a, cut_b, n (shared repeats), mean_diff and median_diff (a - b),
    statistic, p, p_holm (Holm within the percentage), significant (p_holm < alpha), note.
    Baseline comparisons are the rows with ``cut_b == -1``.
    """
    frame = as_frame(records, baseline_records, metric)
    rows = []
    for percentage, runs in frame.groupby("sampled_percentage"):
        table = runs.pivot(index="repeat", columns="sampled_cut_point", values=metric)
        family = []
        for cut_b, cut_a in itertools.combinations(sorted(table.columns), 2):
            pair = table[[cut_a, cut_b]].dropna()
            diff = pair[cut_a] - pair[cut_b]
            statistic, p, note = paired_wilcoxon(pair[cut_a], pair[cut_b], alpha)
            family.append({"sampled_percentage": percentage, "cut_a": cut_a, "cut_b": cut_b, "n": len(pair),
                           "mean_diff": diff.mean() if len(pair) else np.nan,
                           "median_diff": diff.median() if len(pair) else np.nan,
                           "statistic": statistic, "p": p, "note": note})
        adjusted = holm([row["p"] for row in family])
        for row, p_holm in zip(family, adjusted):
            rows.append({**row, "p_holm": p_holm, "significant": bool(p_holm < alpha)})
    columns = ["sampled_percentage", "cut_a", "cut_b", "n", "mean_diff", "median_diff", "statistic", "p",
               "p_holm", "significant", "note"]
    return pd.DataFrame(rows, columns=columns)


def compact_letters(order, different) -> dict:
    """Compact letter display: items sharing a letter are not significantly different.

    ``order``: items best first (letters are given in this order); ``different``: pairs that
    differ significantly.  Insert-and-absorb: start from one group of all items, split every
    group holding a differing pair in two, drop groups contained in another.
    """
    order = list(order)
    groups = [frozenset(order)]
    for i, j in different:
        split = [part for g in groups for part in ((g - {i}, g - {j}) if i in g and j in g else (g,))]
        unique = set(split)
        groups = [g for g in unique if not any(g < h for h in unique)]
    groups.sort(key=lambda g: sorted(order.index(item) for item in g))
    if len(groups) > len(string.ascii_letters):
        raise DataError(f"{len(groups)} letter groups exceed the {len(string.ascii_letters)} letters available")
    return {item: "".join(letter for letter, g in zip(string.ascii_letters, groups) if item in g) for item in order}


def best_groups(records, baseline_records=None, metric: str = "test_acc", alpha: float = 0.05,
                tests: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per percentage and cut point: mean, median, n, whether it is the best (highest mean),
    p_vs_best (Holm-adjusted), same_as_best (not significantly worse than the best; untestable
    pairs count as not different) and letters (compact letter display; "a" holds the best).

    ``tests``: the output of :func:`paired_tests` for the same records, to avoid recomputing it.
    """
    frame = as_frame(records, baseline_records, metric)
    tests = paired_tests(frame, metric=metric, alpha=alpha) if tests is None else tests
    rows = []
    for percentage, runs in frame.groupby("sampled_percentage"):
        stats = runs.groupby("sampled_cut_point")[metric].agg(["mean", "median", "count"])
        stats = stats.sort_values("mean", ascending=False, kind="stable")
        best = stats.index[0]
        family = tests[tests["sampled_percentage"] == percentage]
        p_holm = {frozenset((a, b)): p for a, b, p in zip(family["cut_a"], family["cut_b"], family["p_holm"])}
        different = [(a, b) for a, b, s in zip(family["cut_a"], family["cut_b"], family["significant"]) if s]
        letters = compact_letters(stats.index, different)
        for cut, row in stats.iterrows():
            p_best = np.nan if cut == best else p_holm.get(frozenset((cut, best)), np.nan)
            rows.append({"sampled_percentage": percentage, "sampled_cut_point": cut, "mean": row["mean"],
                         "median": row["median"], "n": int(row["count"]), "is_best": cut == best,
                         "p_vs_best": p_best, "same_as_best": cut == best or not p_best < alpha,
                         "letters": letters[cut]})
    return pd.DataFrame(rows)


def rank_cut_points(records, baseline_records=None, metric: str = "test_acc") -> pd.DataFrame:
    """Mean rank (1 = best, ties averaged) of each cut point per percentage over the repeats in
    which every cut point of that percentage has a run, with its mean metric and n_repeats used;
    sorted by percentage, then mean rank."""
    frame = as_frame(records, baseline_records, metric)
    rows = []
    for percentage, runs in frame.groupby("sampled_percentage"):
        table = runs.pivot(index="repeat", columns="sampled_cut_point", values=metric).dropna()
        ranks = table.rank(axis=1, ascending=False, method="average")
        for cut in table.columns:
            rows.append({"sampled_percentage": percentage, "sampled_cut_point": cut,
                         "mean_rank": ranks[cut].mean() if len(table) else np.nan,
                         "mean": runs.loc[runs["sampled_cut_point"] == cut, metric].mean(),
                         "n_repeats": len(table)})
    result = pd.DataFrame(rows, columns=["sampled_percentage", "sampled_cut_point", "mean_rank", "mean", "n_repeats"])
    return result.sort_values(["sampled_percentage", "mean_rank"], kind="stable").reset_index(drop=True)
