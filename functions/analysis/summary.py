"""Summaries of results files: every run in one table, and mean ± std per cut point and percentage."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..runs.store import BASELINE_CUT, load_results, sweep_key


def run_records(path: Path) -> list[dict]:
    """The run records of one results file, refused with the record and the keys it lacks when one
    lacks a key that the summary or a resumed sweep reads (the check is the store's :func:`sweep_key`)."""
    records = load_results(path)[1]
    for number, record in enumerate(records, start=1):
        sweep_key(record, f"{path}: run record {number} (element {number} of the JSON list)", also=("test_acc",))
    return records


def records_frame(*paths: Path) -> pd.DataFrame:
    """All run records of the given results files in one table (baseline rows have cut -1)."""
    return pd.DataFrame([rec for path in paths for rec in run_records(path)])


def summary_table(frame: pd.DataFrame, digits: int = 3, columns: str = "sampled_percentage") -> pd.DataFrame:
    """Mean +- std test accuracy per cut point (rows; baseline first) and percentage (columns; or
    another of the records' keys, such as an adaptation method)."""
    stats = frame.groupby(["sampled_cut_point", columns])["test_acc"].agg(["mean", "std", "count"])
    cell = stats.apply(lambda r: f"{r['mean']:.{digits}f} ± {0 if np.isnan(r['std']) else r['std']:.{digits}f}"
                       f" (n={int(r['count'])})", axis=1)
    table = cell.unstack(columns)
    table.index = ["baseline" if c == BASELINE_CUT else f"cut {c}" for c in table.index]
    table.columns = [f"{p:g}" if isinstance(p, float) else str(p) for p in table.columns]
    return table


def gains_table(gains: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Each cut point's mean paired gain over the baseline with its 95% interval, per cut point
    (rows) and percentage (columns), from :func:`functions.analysis.stats.gains_over_baseline`."""
    cell = gains.apply(lambda r: f"{r['gain']:+.{digits}f} [{r['ci95_low']:+.{digits}f}, {r['ci95_high']:+.{digits}f}]"
                       if not np.isnan(r["ci95_low"]) else f"{r['gain']:+.{digits}f}", axis=1)
    table = pd.DataFrame({"cut": gains["cut"], "percentage": gains["sampled_percentage"], "cell": cell})
    table = table.pivot(index="cut", columns="percentage", values="cell")
    table.index = [f"cut {c}" for c in table.index]
    table.columns = [f"{p:g}" for p in table.columns]
    return table
