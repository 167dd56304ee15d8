"""How well do a network's activations separate the classes?  The clustering records read:
one score per layer, the layers in network order (:mod:`functions.runs.clustering` writes them).
"""
from __future__ import annotations

import re

import pandas as pd

from ..core.errors import DataError
from ..runs.clustering import GROUP_KEYS, POOLED


def layer_order(names) -> list[str]:
    """``input`` < ``conv0`` < ``conv1`` < ... < ``fc``, whatever the models' depths; other names
    (a backbone's stages) keep the order they first appear in, which is the network's in records."""
    first = {name: i for i, name in enumerate(dict.fromkeys(names))}

    def rank(name):
        match = re.fullmatch(r"conv(\d+)", name)
        return (0, 0) if name == "input" else (2, 0) if name == "fc" else \
            (1, int(match.group(1))) if match else (1, first[name])
    return sorted(first, key=rank)


def layer_scores(records, split: str, score: str = "ari", channels: str = "pooled") -> pd.DataFrame:
    """One ``score`` per (model, layer, percentage, repeat) of one split.

    ``channels``: "pooled" takes the pooled channel vector's score; "max" / "mean" summarise the
    per-channel scores (layers without channels, such as ``fc``, keep the pooled score).
    Columns: model, layer, sampled_percentage, repeat and ``score``.
    """
    frame = pd.DataFrame(records) if not isinstance(records, pd.DataFrame) else records
    missing = [k for k in (*GROUP_KEYS, "layer", "channel", score) if k not in frame.columns]
    if missing:
        raise DataError(f"clustering records lack column(s) {missing}; give the records of an ari_*.json file")
    if channels not in ("pooled", "max", "mean"):
        raise DataError(f"channels={channels!r}; choose 'pooled', 'max' or 'mean'")
    if split not in set(frame["split"]):
        raise DataError(f"no clustering records for split {split!r}; the records hold {sorted(set(frame['split']))}")
    keys = ["model", "layer", "sampled_percentage", "repeat"]
    frame = frame[frame["split"] == split]
    pooled = frame.loc[frame["channel"] == POOLED, [*keys, score]]
    if channels == "pooled":
        return pooled.reset_index(drop=True)
    summary = frame[frame["channel"] >= 0].groupby(keys, as_index=False, sort=False)[score].agg(channels)
    has_channels = pooled.set_index(keys).index.isin(summary.set_index(keys).index)
    return pd.concat([summary, pooled[~has_channels]], ignore_index=True)
