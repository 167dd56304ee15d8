"""Records for model recommendation (metadata, scores, measured accuracy) and a leave-one-setup-out recommender."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import LeaveOneGroupOut
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from ...config import Config, Setup
from ...core.atomic import atomic_file
from ...core.errors import DataError
from ...data.catalog import same_percentage
from ...models.study_cnn import StudyCNN
from .validation import mean_accuracy, rank_agreement, score_columns


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def forward_flops(model: StudyCNN) -> int:
    """FLOPs of one forward pass at ``model.in_shape``: two per multiply-add of every conv and
    linear layer (biases, activations and pooling are not counted), from the layer shapes."""
    _, height, width = model.in_shape
    flops = 0
    for layer in (m for block in model.blocks for m in block):
        if isinstance(layer, nn.Conv2d):
            (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (layer.kernel_size, layer.stride,
                                                                layer.padding, layer.dilation))
            height = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
            width = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
            flops += 2 * (layer.in_channels // layer.groups) * kh * kw * layer.out_channels * height * width
        elif isinstance(layer, (nn.AvgPool2d, nn.MaxPool2d)):
            (kh, kw), (ph, pw) = _pair(layer.kernel_size), _pair(layer.padding)
            sh, sw = _pair(layer.stride or layer.kernel_size)
            height, width = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    head = [model.fc] if model.hidden is None else [*model.hidden.modules(), model.fc]
    return int(flops + sum(2 * m.in_features * m.out_features for m in head if isinstance(m, nn.Linear)))


def build_records(scores, records, *, setup: Setup, cfg: Config, model: StudyCNN, n_target_train: int,
                  source_test_acc: float | None = None) -> pd.DataFrame:
    """One row per (percentage, cut point) of one setup and mode: model and target metadata,
    the scores and the measured mean test accuracy (``test_acc``, with ``test_acc_std`` and
    ``runs``).  ``scores``: a :func:`cut_scores` frame for every percentage, or a mapping
    percentage -> frame (scores computed on each percentage's subset)."""
    accuracy = mean_accuracy(records)
    per_percentage = scores if isinstance(scores, dict) else None
    frames = []
    for percentage, measured in accuracy.groupby("percentage"):
        table = scores
        if per_percentage is not None:
            matches = [v for k, v in per_percentage.items() if same_percentage(k, percentage)]
            if not matches:
                raise DataError(f"no scores for percentage {percentage}; give a cut_scores frame for each "
                                f"of {sorted(accuracy['percentage'].unique())}")
            table = matches[0]
        frames.append(measured.merge(table[["cut_point", *score_columns(table)]], on="cut_point", how="left"))
    body = pd.concat(frames, ignore_index=True)
    if "n_train" not in body.columns:
        body["n_train"] = (body["percentage"] * n_target_train).round()
    cross = setup.source_dataset != setup.target_dataset
    meta = {
        "setup": f"{setup.folder}/{setup.name}", "mode": cfg.mode, "architecture": type(model).__name__,
        "depth": len(model.blocks), "num_channels": cfg.num_channels, "kernel_size": cfg.kernel_size,
        "params": sum(p.numel() for p in model.parameters()), "flops": forward_flops(model),
        "source_dataset": setup.source_dataset,
        "source_classes": ",".join(map(str, setup.pre_train_classes)),
        "source_test_acc": np.nan if source_test_acc is None else float(source_test_acc),
        "target_dataset": setup.target_dataset,
        "target_classes": ",".join(map(str, setup.fine_tune_classes)),
        "domain": "cross-dataset" if cross else "same-dataset", "n_target_train": int(n_target_train),
    }
    front = pd.DataFrame([meta] * len(body))
    ordered = ["percentage", "n_train", "cut_point", *score_columns(body), "test_acc", "test_acc_std", "runs"]
    return pd.concat([front, body[ordered]], axis=1)


def save_records(frame: pd.DataFrame, path) -> Path:
    """Write a records table as CSV atomically (temp file, then rename)."""
    path = Path(path)
    with atomic_file(path) as fh:
        frame.to_csv(fh, index=False)
    return path


def _design_matrix(records: pd.DataFrame) -> pd.DataFrame:
    """Numeric predictors: metadata (sizes on a log scale, domain as 0/1) and every score."""
    x = pd.DataFrame({
        "depth": records["depth"], "num_channels": records["num_channels"], "kernel_size": records["kernel_size"],
        "log_params": np.log10(records["params"]), "log_flops": np.log10(records["flops"]),
        "source_test_acc": records["source_test_acc"],
        "cross_dataset": (records["domain"] == "cross-dataset").astype(float),
        "log_n_target_train": np.log10(records["n_target_train"]),
        "log_percentage": np.log10(records["percentage"]), "log_n_train": np.log10(records["n_train"]),
        "cut_point": records["cut_point"],
    }, index=records.index)
    for column in score_columns(records):
        x[column] = records[column]
    return x.astype(float)


def _rank_agreement(records: pd.DataFrame, predicted: pd.Series) -> dict:
    """Mean Kendall tau / Spearman rho between ``predicted`` and accuracy over the cut points of
    each (setup, mode, percentage), and how often its top cut is the measured best."""
    taus, rhos, hits = [], [], []
    for _, group in records.groupby(["setup", "mode", "percentage"]):
        cuts = group["cut_point"].to_numpy()
        p = pd.Series(predicted[group.index].to_numpy(float), index=cuts)
        a = pd.Series(group["test_acc"].to_numpy(float), index=cuts)
        agreement = rank_agreement(p, a)
        if not agreement["varied"]:
            continue
        taus.append(agreement["kendall_tau"])
        rhos.append(agreement["spearman_rho"])
        best = a[np.isfinite(p.to_numpy())].idxmax()
        hits.append(agreement["top_cut"] is not None and agreement["top_cut"] == best)
    mean = lambda v: float(np.mean(v)) if v else np.nan
    return {"kendall_tau": mean(taus), "spearman_rho": mean(rhos), "top1_rate": mean(hits), "groups": len(taus)}


def recommender_eval(records: pd.DataFrame, feature_columns=None) -> pd.DataFrame:
    """Leave-one-setup-out evaluation of a standardised linear (ridge) regression that predicts mean test
    accuracy from metadata and scores, beside every single score used as a ranking on its own.

    Returns one row per method: ``recommender`` (with mae and rmse of held-out predictions) and
    each score (ranking only), with the mean rank agreement over cut points within each
    (setup, mode, percentage), sorted by kendall_tau after the recommender.  Predictors with
    missing values are left out unless named in ``feature_columns``; those used are in
    ``result.attrs["features"]``."""
    needed = {"setup", "mode", "percentage", "cut_point", "test_acc", "domain", "params", "flops", "n_train"}
    missing = sorted(needed - set(records.columns))
    if missing:
        raise DataError(f"records lack {missing}; build them with build_records(...)")
    records = records.reset_index(drop=True)
    if records["setup"].nunique() < 2:
        raise DataError("leave-one-setup-out needs records of at least two setups; add more study folders")
    if not np.isfinite(records["test_acc"].to_numpy(float)).all():
        raise DataError("some records have no measured accuracy (test_acc is NaN); drop them first")
    x = _design_matrix(records)
    if feature_columns is None:
        features = [c for c in x.columns if x[c].notna().all()]
    else:
        features = list(feature_columns)
        unknown = sorted(set(features) - set(x.columns))
        if unknown:
            raise DataError(f"unknown feature columns {unknown}; choose from {list(x.columns)}")
        if x[features].isna().any().any():
            raise DataError(f"feature columns {[c for c in features if x[c].isna().any()]} have missing values")
    predicted = pd.Series(np.nan, index=records.index)
    # ridge, its penalty chosen by cross-validation inside each training fold: with a handful of
    # setups and correlated predictors, ordinary least squares extrapolated to held-out setups
    # with a mean absolute error of 1.33 (accuracy units) on the quick records, ridge with 0.14
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    for train, test in LeaveOneGroupOut().split(x, groups=records["setup"]):
        model.fit(x.loc[train, features], records.loc[train, "test_acc"])
        predicted[test] = model.predict(x.loc[test, features])
    error = predicted - records["test_acc"]
    rows = [{"method": "recommender", "kind": "recommender", "mae": float(error.abs().mean()),
             "rmse": float(np.sqrt((error ** 2).mean())), **_rank_agreement(records, predicted)}]
    singles = [{"method": c, "kind": "score", "mae": np.nan, "rmse": np.nan,
                **_rank_agreement(records, records[c].astype(float))} for c in score_columns(records)]
    singles.sort(key=lambda r: np.inf if np.isnan(r["kendall_tau"]) else -r["kendall_tau"])
    result = pd.DataFrame(rows + singles)
    result.attrs["features"] = features
    return result
