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
from scipy.stats import nct, rankdata, t as student_t, wilcoxon

from ..core.errors import DataError

KEYS = ("sampled_percentage", "sampled_cut_point", "repeat")
# the Wilcoxon signed-rank test's efficiency relative to the t-test when differences are normal:
# it needs about pi/3 times the repeats of a t-test for the same power
WILCOXON_EFFICIENCY = 3 / np.pi


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


# up to this many pairs, ties or zeros make the p-value come from every sign pattern (scipy's own
# limit: 2**13 patterns stay under its 9999 resamples)
EXACT_SIGN_PATTERNS_MAX_N = 13


def _tied_signed_rank(diff: np.ndarray) -> tuple[float, float]:
    """(statistic, two-sided p) of the signed-rank test of ``diff`` (with ties or zeros) over all
    its sign patterns: zeros dropped, tied ranks averaged.  The same numbers as scipy's
    ``wilcoxon`` gives for n <= 13 with ties or zeros (its permutation test), which takes about a
    second per test where this takes a millisecond."""
    nonzero = diff[diff != 0]
    ranks = rankdata(np.abs(nonzero))
    positive = ranks[nonzero > 0].sum()
    patterns = (np.arange(2 ** len(ranks))[:, None] >> np.arange(len(ranks))) & 1
    null = patterns @ ranks
    below, above = np.count_nonzero(null <= positive) / len(null), np.count_nonzero(null >= positive) / len(null)
    return float(min(positive, ranks.sum() - positive)), min(1.0, 2 * min(below, above))


def paired_wilcoxon(a, b, alpha: float = 0.05) -> tuple[float, float, str]:
    """(statistic, p, note) of a two-sided Wilcoxon signed-rank test of the paired samples a, b.

    Untestable cases do not raise: fewer than 2 pairs gives p = NaN, all-zero differences give
    p = 1.0; the note says why, and also when n is too small for any p below ``alpha``.
    Accuracies are fractions k/N, so differences are rounded to 12 decimals: float noise must
    neither break ties nor turn equal accuracies into tiny differences.  With ties or zeros and
    n <= 13 the p-value is exact over every sign pattern (:func:`_tied_signed_rank`).
    """
    diff = np.round(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), 12)
    if len(diff) < 2:
        return np.nan, np.nan, f"{len(diff)} paired repeat(s); a test needs at least 2"
    nonzero = int(np.count_nonzero(diff))
    if nonzero == 0:
        return np.nan, 1.0, "all paired differences are zero"
    tied = nonzero < len(diff) or len(np.unique(np.abs(diff[diff != 0]))) < nonzero
    if tied and len(diff) <= EXACT_SIGN_PATTERNS_MAX_N:
        statistic, p = _tied_signed_rank(diff)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # scipy's small-sample notes; the note below says it
            result = wilcoxon(diff)
        statistic, p = float(result.statistic), float(result.pvalue)
    smallest = 2.0 / 2 ** nonzero
    note = f"{nonzero} non-zero differences cannot reach p < {alpha} (smallest p {smallest:.3g})" \
        if smallest >= alpha else ""
    return statistic, p, note


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


def chosen_cuts(frame: pd.DataFrame, by=("sampled_percentage",)) -> pd.Series:
    """Per group of ``by`` (a fraction of the data; with a mode, per mode too), the cut point with
    the highest mean validation accuracy (the test split never picks a setting) over the repeats
    that every cut point of the group has: a cut run to more repeats afterwards is judged on the
    same seeds as the others, so its extra runs neither help nor hurt its chance of being picked.
    ``frame``: one row per run with the ``by`` columns, ``sampled_cut_point``, ``repeat`` and
    ``val_acc``."""
    keys = list(by)
    cuts = frame.groupby(keys)["sampled_cut_point"].transform("nunique")
    shared = frame[frame.groupby([*keys, "repeat"])["sampled_cut_point"].transform("nunique") == cuts]
    if shared.empty:
        raise DataError("no repeat was run at every cut point, so none can be picked on the same seeds; "
                        "run every cut point at the same repeats first")
    means = shared.groupby([*keys, "sampled_cut_point"])["val_acc"].mean().reset_index()
    best = means.loc[means.groupby(keys, sort=False)["val_acc"].idxmax()]
    return best.set_index(keys)["sampled_cut_point"].rename("best_cut")


def smallest_holm_p(repeats: int, family: int) -> float:
    """The smallest Holm-adjusted p an exact two-sided Wilcoxon test of ``repeats`` paired runs can
    give in a family of ``family`` tests: ``family * 2 / 2**repeats`` (every difference of one sign)."""
    return min(1.0, family * 2.0 / 2 ** repeats)


def repeats_to_detect(family: int, alpha: float = 0.05) -> int:
    """The fewest paired repeats whose exact Wilcoxon test can stay below ``alpha`` after Holm's
    correction over ``family`` tests."""
    n = 1
    while smallest_holm_p(n, family) >= alpha:
        n += 1
    return n


def repeats_for_power(gains, family: int, alpha: float = 0.05, power: float = 0.8, most: int = 1000) -> float:
    """How many paired repeats would detect a mean gain like ``gains`` with probability ``power``.

    A power calculation from the measured spread: the paired t-test's exact power (noncentral t)
    at the measured mean and standard deviation, at ``alpha / family`` (the bar Holm's correction
    sets for a family's smallest p), scaled by the Wilcoxon test's efficiency under normal
    differences, and never fewer than :func:`repeats_to_detect`.  NaN when the mean gain is not
    positive (nothing to detect) or fewer than 2 gains are measured; inf above ``most``."""
    gains = np.asarray(gains, dtype=np.float64)
    if len(gains) < 2 or gains.mean() <= 0:
        return np.nan
    floor = repeats_to_detect(family, alpha)
    spread = gains.std(ddof=1)
    if spread == 0:
        return float(floor)
    bar, effect = alpha / family, gains.mean() / spread
    for n in range(2, most + 1):
        critical = student_t.ppf(1 - bar / 2, n - 1)
        shift = effect * np.sqrt(n)
        if nct.sf(critical, n - 1, shift) + nct.cdf(-critical, n - 1, shift) >= power:
            return float(max(floor, int(np.ceil(n / WILCOXON_EFFICIENCY))))
    return np.inf


def paired_gain(a, b, rng: np.random.Generator, resamples: int = 10_000) -> dict:
    """``a`` against ``b``, paired: n, the mean difference with a 95% bootstrap interval
    (percentile, resampling the pairs; NaN below 2 pairs) and the exact Wilcoxon p."""
    gains = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    _, p, _ = paired_wilcoxon(a, b)
    if len(gains) >= 2:
        means = gains[rng.integers(0, len(gains), (resamples, len(gains)))].mean(axis=1)
        low, high = np.percentile(means, [2.5, 97.5])
    else:
        low = high = np.nan
    return {"n": len(gains), "gain": gains.mean() if len(gains) else np.nan, "ci95_low": low, "ci95_high": high,
            "p": p}


def paired_comparison(first: pd.Series, second: pd.Series, rng: np.random.Generator, family: int,
                      alpha: float = 0.05) -> dict | None:
    """``first`` against ``second``, paired by index (the repeat: the same subset and seed), one
    test of a ``family``: :func:`paired_gain`, the standard deviation of the paired differences
    and the repeats a power calculation from them asks for (two-sided: power for either sign).
    None where no index has both."""
    pair = pd.concat([first, second], axis=1, keys=["first", "second"]).dropna()
    if pair.empty:
        return None
    difference = pair["first"] - pair["second"]
    return {**paired_gain(pair["first"], pair["second"], rng), "std of differences": difference.std(),
            "repeats_for_power": repeats_for_power(np.sign(difference.mean()) * difference, family, alpha)}


def holm_family(family: list[dict], alpha: float = 0.05) -> list[dict]:
    """The rows of one family of :func:`paired_gain` comparisons with their Holm-adjusted p, whether
    each is significant, the smallest adjusted p its repeats allow (``detectable``: below alpha)."""
    return [{**row, "p_holm": p_holm, "significant": bool(p_holm < alpha),
             "smallest_p_holm": smallest_holm_p(row["n"], len(family)),
             "detectable": smallest_holm_p(row["n"], len(family)) < alpha}
            for row, p_holm in zip(family, holm([row["p"] for row in family]))]


GAIN_COLUMNS = ["n", "gain", "ci95_low", "ci95_high", "p"]  # what paired_gain gives
TEST_COLUMNS = ["p", "p_holm", "significant", "smallest_p_holm", "detectable"]


def shown_tests(tests: pd.DataFrame) -> pd.DataFrame:
    """A family's tests (:func:`holm_family` rows) as a notebook shows them: where none is
    significant, the effects and their intervals alone, since a column of p values that all fail
    says less than the verdict's one line on why (with the smallest p these repeats can give)."""
    return tests if tests["significant"].any() else tests.drop(columns=TEST_COLUMNS)


def gains_over_baseline(records, baseline_records, metric: str = "test_acc", alpha: float = 0.05,
                        resamples: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Does transfer help?  Each cut point against the baseline trained on the same subsets, per
    percentage: the mean paired gain with a 95% bootstrap interval (percentile, resampling the
    repeats), the exact Wilcoxon p, Holm-corrected over the cut points of the percentage (the
    family of this question: one test per cut, not every pair), whether it is significant, and
    the smallest corrected p the design can give at all (``detectable`` False: no gain, however
    large, can be significant with these repeats) and the repeats that would detect a gain of the
    measured size and spread with 80% power (:func:`repeats_for_power`); ``validation``: the cut's
    mean validation accuracy over those repeats, where the records have one (NaN otherwise)."""
    frame = as_frame(records, baseline_records, metric)
    if "val_acc" not in frame:
        frame["val_acc"] = np.nan
    if not (frame.sampled_cut_point == -1).any():
        raise DataError("gains over the baseline need baseline records (cut -1) beside the cut points' records")
    rng = np.random.default_rng(seed)
    rows = []
    for percentage, runs in frame.groupby("sampled_percentage"):
        table = runs.pivot(index="repeat", columns="sampled_cut_point", values=metric)
        validation = runs.pivot(index="repeat", columns="sampled_cut_point", values="val_acc")
        cuts = [c for c in sorted(table.columns) if c != -1]
        family = []
        for cut in cuts:
            pair = table[[cut, -1]].dropna()
            family.append({"sampled_percentage": percentage, "cut": cut,
                           "validation": validation.loc[pair.index, cut].mean(), "baseline": pair[-1].mean(),
                           "mean": pair[cut].mean(), **paired_gain(pair[cut], pair[-1], rng, resamples),
                           "repeats_for_power": repeats_for_power(pair[cut] - pair[-1], len(cuts), alpha)})
        rows += holm_family(family, alpha)
    return pd.DataFrame(rows)


def _power_clause(repeats: float) -> str:
    if np.isnan(repeats):
        return ""
    if np.isinf(repeats):
        return "; a gain of this size and spread needs more than a thousand repeats to be detected"
    return f"; about {int(repeats)} would detect a gain of this size and spread with 80% power"


def gains_verdict(gains: pd.DataFrame, what: str, alpha: float = 0.05) -> str:
    """One sentence per percentage on the gain over the baseline of the cut the validation
    accuracy picks (the test split never picks it; without validation accuracies, the cut of the
    largest gain), made from :func:`gains_over_baseline`'s table: its size and interval, and
    whether it is significant or why the design cannot say."""
    lines = []
    for percentage, rows in gains.groupby("sampled_percentage"):
        if rows["gain"].isna().all():  # no cut point shares a repeat with the baseline here
            lines.append(f"{what} at {percentage * 100:g}% of the data: no run pairs with a baseline run.")
            continue
        picked = rows["validation"].notna().any()
        best = rows.loc[rows["validation"].idxmax() if picked else rows["gain"].idxmax()]
        family = len(rows)
        which = "the cut validation picks" if picked else "the best cut"
        head = (f"{what} at {percentage * 100:g}% of the data: {which} ({int(best.cut)}) gains {best.gain:+.3f} over the "
                f"baseline ({best.baseline:.3f} to {best['mean']:.3f}; 95% CI {best.ci95_low:+.3f} to "
                f"{best.ci95_high:+.3f}, n = {int(best.n)} paired repeats)")
        if best.significant:
            lines.append(f"{head}: significant after Holm's correction over {family} cuts (p = {best.p_holm:.3g}).")
        elif not best.detectable:
            repeats = f"{int(best.n)} repeat{'' if best.n == 1 else 's'}"
            lines.append(f"{head}: the design cannot detect it: with {repeats} the smallest p an exact "
                         f"Wilcoxon test gives is {2 / 2 ** int(best.n):.3g}, {best.smallest_p_holm:.3g} after Holm's "
                         f"correction over {family} cuts, above {alpha}; {repeats_to_detect(family, alpha)} repeats "
                         f"could{_power_clause(best.repeats_for_power)}.")
        else:
            lines.append(f"{head}: not significant after Holm's correction over {family} cuts (p = {best.p_holm:.3g})"
                         f"{_power_clause(best.repeats_for_power)}.")
    return "\n".join(lines)


def pairs_verdict(tests: pd.DataFrame, what: str, alpha: float = 0.05) -> str:
    """One line when :func:`paired_tests` found no significant pair at any percentage, with why
    (the repeats, the pairs per family, the smallest corrected p the design allows); empty when
    some pair differs (then the groups table says which)."""
    if tests.empty or tests["significant"].any():
        return ""
    families = tests.groupby("sampled_percentage").size()
    repeats = int(tests["n"].max())
    smallest = smallest_holm_p(repeats, int(families.max()))
    why = (f"with at most {repeats} paired repeats the smallest p after Holm's correction over "
           f"{int(families.max())} pairs is {smallest:.3g}, so no difference could be significant" if smallest >= alpha else
           f"the smallest corrected p found is {tests['p_holm'].min():.3g}")
    return (f"{what}: no two cut points (the baseline among them) differ significantly at any fraction "
            f"(alpha {alpha}, Holm within each fraction); {why}.")
