"""Transferability scores: how well frozen features should transfer, judged without training.

Four scores (higher is better for all of them):

* LogME (You et al., ICML 2021): per-sample log maximum evidence of a Bayesian linear model
  from the features to each one-hot target column, averaged over classes.
* H-score (Bao et al., ICIP 2019): ``tr(cov(f)^-1 cov(E[f|y]))``; its shrinkage variant
  (Ibrahim et al., ICLR 2023) replaces ``cov(f)`` by a Ledoit-Wolf shrunk estimate, which
  keeps it meaningful when there are fewer samples than dimensions.
* LEEP (Nguyen et al., ICML 2020): log expected empirical prediction of the source head.
* NCE (Tran et al., ICCV 2019): negative conditional entropy of target labels given the source
  head's hard predictions.

LogME and the H-scores need only a few spectra: with more samples than dimensions they come
from running float64 sums (Gram matrix, class sums) eigendecomposed once, so features can be
streamed chunk by chunk; otherwise from one SVD of the samples.  On top of the scores: scores of
a source model at every cut point, their agreement with measured sweeps, and a records table
with a leave-one-setup-out recommender.
"""
from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats as scipy_stats
from scipy.linalg import eigh_tridiagonal, lapack
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import LeaveOneGroupOut
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from tqdm.auto import tqdm

from .atomic import atomic_file
from .config import Config, Setup
from .data import DataError, Split
from .models import StudyCNN

EPS = np.finfo(np.float64).eps
# The evidence is maximised over alpha, beta inside these bounds (on features scaled to unit mean
# eigenvalue): a target that the features fit exactly, or not at all, sends one of them to 0 or
# infinity, and the bounded maximum is then a finite, slightly conservative evidence.
EVIDENCE_BOUNDS = (1e-12, 1e12)
MAX_FIXED_POINT_STEPS = 1000
EVIDENCE_TOLERANCE = 1e-12  # per-sample log evidence; the fixed point stops once a step gains less
STATS_CHUNK = 4096  # rows converted to float64 at a time when summing the Gram matrix
FEATURE_KINDS = ("gap", "flat")
SCORE_PREFIXES = ("logme", "hscore", "leep", "nce")


# ----------------------------------------------------------------------------- input checks

def _check_features(features, name: str = "features") -> np.ndarray:
    f = features.detach().cpu().numpy() if torch.is_tensor(features) else np.asarray(features)
    if f.ndim != 2:
        raise DataError(f"{name} must be 2-D (samples, dimensions), got shape {f.shape}; "
                        f"flatten with features.reshape(len(features), -1)")
    if not (np.issubdtype(f.dtype, np.floating) or np.issubdtype(f.dtype, np.integer)):
        raise DataError(f"{name} must be real numbers, got dtype {f.dtype}")
    if f.shape[0] < 2 or f.shape[1] < 1:
        raise DataError(f"{name} has shape {f.shape}; give at least two samples of at least one dimension")
    bad = int(np.size(f) - np.count_nonzero(np.isfinite(f)))
    if bad:
        raise DataError(f"{name} contain {bad} non-finite values (NaN or inf); a diverged network gives "
                        f"them: drop those samples or score a finite model")
    return f


def _check_labels(labels, n: int, name: str = "labels", contiguous: bool = True) -> tuple[np.ndarray, int]:
    """Integer labels, one per sample; target labels must be 0..C-1 with every class present."""
    y = labels.detach().cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
    if y.ndim != 1:
        raise DataError(f"{name} must be 1-D (one label per sample), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name} must be integers, got dtype {y.dtype}; cast with labels.astype(int)")
    if len(y) != n:
        raise DataError(f"{n} samples but {len(y)} {name}; give exactly one label per sample")
    present = np.unique(y)
    if present.size and present[0] < 0:
        raise DataError(f"{name} contain negative values {present[present < 0][:5].tolist()}; labels are 0..C-1")
    if contiguous:
        if len(present) < 2:
            raise DataError(f"{name} hold {len(present)} class; a transferability score needs at least two")
        if present[-1] != len(present) - 1:
            missing = sorted(set(range(int(present[-1]) + 1)) - set(present.tolist()))[:10]
            raise DataError(f"{name} must be 0..C-1 with every class present; {missing} are absent. "
                            f"Relabel with np.unique(labels, return_inverse=True)[1]")
    return y.astype(np.int64), int(present[-1]) + 1


def _one_hot(y: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes)[y]


# ----------------------------------------------------------------------------- sufficient statistics

class _FeatureStats:
    """Float64 running sums of features (about a shift, so centring later loses no digits) from
    which LogME, both H-scores and the Ledoit-Wolf shrinkage follow exactly."""

    def __init__(self, dim: int, num_classes: int):
        self.dim, self.num_classes, self.n = dim, num_classes, 0
        self.shift = None
        self.total = np.zeros(dim)
        self.gram = np.zeros((dim, dim))
        self.class_sums = np.zeros((num_classes, dim))
        self.counts = np.zeros(num_classes)
        self.sq_norm_weighted = np.zeros(dim)  # sum of |u|^2 u, for the Ledoit-Wolf shrinkage
        self.fourth = 0.0                       # sum of |u|^4

    def update(self, x, y: np.ndarray) -> None:
        u = np.asarray(x, dtype=np.float64)
        if self.shift is None:
            self.shift = u.mean(0)
        u = u - self.shift
        sq = np.einsum("ij,ij->i", u, u)
        self.n += len(u)
        self.total += u.sum(0)
        self.gram += u.T @ u
        self.class_sums += _one_hot(y, self.num_classes).T @ u
        self.counts += np.bincount(y, minlength=self.num_classes)
        self.sq_norm_weighted += sq @ u
        self.fourth += sq @ sq

    @classmethod
    def of(cls, features: np.ndarray, y: np.ndarray, num_classes: int) -> "_FeatureStats":
        stats = cls(features.shape[1], num_classes)
        for i in range(0, len(features), STATS_CHUNK):
            stats.update(features[i:i + STATS_CHUNK], y[i:i + STATS_CHUNK])
        return stats

    def raw_gram(self) -> np.ndarray:
        """F^T F of the unshifted features."""
        a, s = self.shift, self.total
        return self.gram + np.outer(a, s) + np.outer(s, a) + self.n * np.outer(a, a)

    def raw_cross(self) -> np.ndarray:
        """F^T Y (dim, classes) of the unshifted features and one-hot labels."""
        return (self.class_sums + np.outer(self.counts, self.shift)).T

    def covariance(self) -> np.ndarray:
        d = self.total / self.n
        return self.gram / self.n - np.outer(d, d)

    def centred_fourth_moment(self) -> float:
        """Sum over samples of |x - mean|^4, expanded in the shifted sums."""
        d = self.total / self.n
        c = d @ d
        return float(self.fourth - 4 * d @ self.sq_norm_weighted + 4 * d @ self.gram @ d
                     + 2 * c * np.trace(self.gram) - 3 * self.n * c * c)

    def between_vectors(self) -> np.ndarray:
        """Rows sqrt(p_c) (mean_c - mean): cov(E[f|y]) is their Gram matrix."""
        mean = self.total / self.n
        return np.sqrt(self.counts / self.n)[:, None] * (self.class_sums / self.counts[:, None] - mean)


def _eigen_projections(symmetric: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) of ``symmetric`` and the squared coordinates of each column of
    ``vectors`` in its eigenbasis.  Only a few vectors are needed, so the matrix is reduced to
    tridiagonal form (A = Q T Q^T) and the eigenvectors of A are never formed: this is about
    2.5x faster than a full eigendecomposition at d = 3136, with the same eigenvalues."""
    d = len(symmetric)
    lwork, _ = lapack.dsytrd_lwork(d, lower=1)
    packed, diagonal, off_diagonal, tau, info = lapack.dsytrd(symmetric, lower=1, lwork=int(lwork))
    if info != 0:
        raise np.linalg.LinAlgError(f"tridiagonal reduction failed (LAPACK info {info})")
    rotated = np.array(vectors, dtype=np.float64)
    for i in range(d - 1):   # Q^T vectors = H(d-2) ... H(0) vectors, H(i) = I - tau_i v v^T
        v = packed[i + 1:, i].copy()
        v[0] = 1.0
        rotated[i + 1:] -= tau[i] * np.outer(v, v @ rotated[i + 1:])
    values, tridiagonal_vectors = eigh_tridiagonal(diagonal, off_diagonal)
    return values, (tridiagonal_vectors.T @ rotated) ** 2


def _left_singular(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left singular vectors and singular values of a wide ``f`` (n <= d) without its d-long
    right vectors: from f^T = QR, f = R^T Q^T, so the SVD of the small R^T gives them."""
    r = np.linalg.qr(f.T, mode="r")
    u, s, _ = np.linalg.svd(r.T)
    return u, s


def _above_noise(values: np.ndarray, n: int, d: int) -> np.ndarray:
    """Spectral values distinguishable from round-off (numpy's matrix-rank rule)."""
    top = values.max(initial=0.0)
    return values > top * max(n, d) * EPS if top > 0 else np.zeros(values.shape, bool)


# ----------------------------------------------------------------------------- LogME

def _logme_spectrum_from_stats(stats: _FeatureStats):
    sigma, projected2 = _eigen_projections(stats.raw_gram(), stats.raw_cross())   # (V^T F^T y)^2 = s^2 (U^T y)^2
    keep = _above_noise(sigma, stats.n, stats.dim)
    sigma = sigma[keep]
    z2 = projected2[keep] / sigma[:, None]
    return sigma, z2, stats.counts - z2.sum(0), stats.n, stats.dim


def _logme_spectrum_from_samples(f: np.ndarray, y: np.ndarray, num_classes: int):
    u, s = _left_singular(np.asarray(f, dtype=np.float64))
    keep = _above_noise(s, *f.shape)
    z2 = (u[:, keep].T @ _one_hot(y, num_classes)) ** 2
    return s[keep] ** 2, z2, np.bincount(y, minlength=num_classes) - z2.sum(0), *f.shape


def _log_evidence(sigma: np.ndarray, z2: np.ndarray, residual0: np.ndarray, n: int, d: int) -> np.ndarray:
    """Per-class maximum log evidence / n of y ~ N(F w, 1/beta), w ~ N(0, 1/alpha).

    ``sigma``: the non-zero eigenvalues of F^T F; ``z2[i, c]``: squared projection of class c's
    one-hot column on the i-th left singular vector; ``residual0[c]``: the part of that column
    outside the features' span.  MacKay's fixed point alpha = gamma / |m|^2,
    beta = (n - gamma) / |F m - y|^2 is iterated for all classes at once, O(rank) per step.
    """
    rank, classes = z2.shape
    sigma = (sigma / sigma.mean() if rank else sigma)[:, None]   # the evidence does not change with feature scale
    residual0 = np.maximum(residual0, 0.0)

    def evaluate(alpha, beta):
        t = alpha / beta
        gamma = (sigma / (sigma + t)).sum(0)
        weight_norm2 = (sigma * z2 / (sigma + t) ** 2).sum(0)
        residual2 = (z2 * (t / (sigma + t)) ** 2).sum(0) + residual0
        evidence = (n / 2 * np.log(beta) + rank / 2 * np.log(alpha) - 0.5 * np.log(alpha + beta * sigma).sum(0)
                    - beta / 2 * residual2 - alpha / 2 * weight_norm2 - n / 2 * math.log(2 * math.pi))
        return gamma, weight_norm2, residual2, evidence / n

    low, high = EVIDENCE_BOUNDS
    alpha, beta = np.ones(classes), np.ones(classes)
    gamma, weight_norm2, residual2, evidence = evaluate(alpha, beta)
    for _ in range(MAX_FIXED_POINT_STEPS):
        alpha = np.clip(gamma / np.maximum(weight_norm2, low), low, high)
        beta = np.clip((n - gamma) / np.maximum(residual2, low), low, high)
        gamma, weight_norm2, residual2, updated = evaluate(alpha, beta)
        converged = np.all(np.abs(updated - evidence) < EVIDENCE_TOLERANCE)
        evidence = updated
        if converged:
            break
    return evidence


def _logme_spectrum(f: np.ndarray, y: np.ndarray, num_classes: int):
    if len(f) > f.shape[1]:
        return _logme_spectrum_from_stats(_FeatureStats.of(f, y, num_classes))
    return _logme_spectrum_from_samples(f, y, num_classes)


def logme(features, labels) -> float:
    """LogME: mean over target classes of the per-sample log maximum evidence (higher: the
    features explain the labels with a simpler linear model).  Invariant to feature scale."""
    f = _check_features(features)
    y, num_classes = _check_labels(labels, len(f))
    return float(_log_evidence(*_logme_spectrum(f, y, num_classes)).mean())


# ----------------------------------------------------------------------------- H-scores

def _ledoit_wolf_shrinkage(n: int, p: int, cov_trace: float, cov_frob2: float, fourth: float) -> float:
    """Ledoit & Wolf (2004)'s shrinkage intensity towards (trace/p) I, from the covariance's
    trace and squared Frobenius norm and the samples' summed |x - mean|^4."""
    mu = cov_trace / p
    spread = (cov_frob2 - 2 * mu * cov_trace + p * mu * mu) / p
    noise = (fourth / n - cov_frob2) / (p * n)
    return float(min(max(noise, 0.0), spread) / spread) if spread > 0 else 0.0


def _hscore_spectrum_from_stats(stats: _FeatureStats):
    lam, between2 = _eigen_projections(stats.covariance(), stats.between_vectors().T)
    lam, between2 = np.maximum(lam, 0.0), between2.sum(1)
    shrinkage = _ledoit_wolf_shrinkage(stats.n, stats.dim, lam.sum(), (lam ** 2).sum(), stats.centred_fourth_moment())
    return lam, between2, shrinkage, stats.n, stats.dim


def _hscore_spectrum_from_samples(f: np.ndarray, y: np.ndarray, num_classes: int):
    n, p = f.shape
    centred = np.asarray(f, dtype=np.float64) - np.mean(f, axis=0, dtype=np.float64)
    u, s = _left_singular(centred)
    counts = np.bincount(y, minlength=num_classes)
    # between-class vectors projected on the principal axes: sqrt(p_c) * class mean of u, times s
    class_means_u = (_one_hot(y, num_classes).T @ u) / counts[:, None]
    between2 = (np.sqrt(counts / n)[:, None] * class_means_u * s) ** 2
    lam = s ** 2 / n
    fourth = float((np.einsum("ij,ij->i", centred, centred) ** 2).sum())
    return lam, between2.sum(0), _ledoit_wolf_shrinkage(n, p, lam.sum(), (lam ** 2).sum(), fourth), n, p


def _hscore_value(lam: np.ndarray, between2: np.ndarray, shrinkage: float, n: int, p: int,
                  shrink: bool) -> float:
    if not shrink or shrinkage == 0:
        keep = _above_noise(lam, n, p)
        return float((between2[keep] / lam[keep]).sum())
    # cov_a = (1 - a) cov + a (tr cov / p) I shares cov's eigenvectors; between-class vectors
    # have no component outside the principal axes listed here
    shrunk = (1 - shrinkage) * lam + shrinkage * lam.sum() / p
    return float(((1 - shrinkage) * between2 / shrunk).sum())


def _hscore_spectrum(f: np.ndarray, y: np.ndarray, num_classes: int):
    if len(f) > f.shape[1]:
        return _hscore_spectrum_from_stats(_FeatureStats.of(f, y, num_classes))
    return _hscore_spectrum_from_samples(f, y, num_classes)


def hscore(features, labels, shrinkage: bool = False) -> float:
    """H-score: ``tr(cov(f)^+ cov(E[f|y]))``, how much of the features' variance separates the
    classes (pseudo-inverse over the resolvable spectrum).  ``shrinkage=True``: Ledoit-Wolf shrunk
    covariance, ``tr(cov_a^-1 (1 - a) cov(E[f|y]))``, stable when samples are few."""
    f = _check_features(features)
    y, num_classes = _check_labels(labels, len(f))
    return _hscore_value(*_hscore_spectrum(f, y, num_classes), shrink=shrinkage)


# ----------------------------------------------------------------------------- source-head scores

def leep(source_probs, labels) -> float:
    """LEEP: mean log-probability of the true target label under the source head's softmax
    composed with the empirical P(target | source label).  0 is the maximum."""
    theta = _check_features(source_probs, "source_probs").astype(np.float64)
    y, num_classes = _check_labels(labels, len(theta))
    if theta.min() < 0 or not np.allclose(theta.sum(1), 1.0, atol=1e-3):
        raise DataError("source_probs rows must be probabilities (non-negative, summing to 1); "
                        "apply softmax to the source head's logits")
    joint = _one_hot(y, num_classes).T @ theta / len(theta)          # P(y, z)
    source_marginal = joint.sum(0)
    conditional = np.divide(joint, source_marginal, out=np.zeros_like(joint), where=source_marginal > 0)
    expected = np.einsum("iz,iz->i", theta, conditional[y])
    return float(np.log(expected).mean())


def nce(source_labels, labels) -> float:
    """NCE: -H(target label | source head's predicted label); 0 when the source prediction
    determines the target label, about -H(target label) when it says nothing about it."""
    y, num_classes = _check_labels(labels, len(np.asarray(labels)))
    z, _ = _check_labels(source_labels, len(y), "source_labels", contiguous=False)
    _, z = np.unique(z, return_inverse=True)
    joint = np.zeros((num_classes, z.max() + 1))
    np.add.at(joint, (y, z), 1.0)
    joint /= len(y)
    source_marginal = np.broadcast_to(joint.sum(0), joint.shape)
    seen = joint > 0
    return float((joint[seen] * np.log(joint[seen] / source_marginal[seen])).sum())


# ----------------------------------------------------------------------------- scores per cut point

def _flat_grid(shape, max_dim: int):
    """Spatial size to average-pool an activation to before flattening, so that at most
    ``max_dim`` values remain (None: flatten as is)."""
    channels, height, width = shape
    if channels * height * width <= max_dim:
        return None
    side = max(1, math.isqrt(max_dim // channels))
    return min(height, side), min(width, side)


def _scores_of(sink, y: np.ndarray, num_classes: int) -> dict:
    """LogME and both H-scores of collected rows (few samples) or of running sums (many)."""
    if isinstance(sink, _FeatureStats):
        log_spec, h_spec = _logme_spectrum_from_stats(sink), _hscore_spectrum_from_stats(sink)
    else:
        f = np.concatenate(sink)
        log_spec = _logme_spectrum_from_samples(f, y, num_classes)
        h_spec = _hscore_spectrum_from_samples(f, y, num_classes)
    return {"logme": float(_log_evidence(*log_spec).mean()), "hscore": _hscore_value(*h_spec, shrink=False),
            "hscore_shrink": _hscore_value(*h_spec, shrink=True)}


@torch.no_grad()
def cut_scores(model: StudyCNN, split: Split, *, chunk_size: int = 512, max_dim: int = 4096,
               progress: bool = True) -> pd.DataFrame:
    """Transferability of ``model``'s features for the target ``split`` at every cut point.

    Row k describes the activation entering block k (0: the image; depth: the last block's
    output), both global-average-pooled (``*_gap``) and flattened (``*_flat``; activations
    with more than ``max_dim`` values are first average-pooled to the finest spatial grid that
    fits, and ``flat_dim`` says what was scored), each scored with LogME, H-score and shrinkage
    H-score.  ``leep`` and ``nce`` come from the source head's softmax on the same images; they
    describe the whole source model, so they are equal in every row.  The blocks run once per
    chunk.  To score one percentage's data, pass ``split.subset(balanced_subset(...))``.
    """
    y, num_classes = _check_labels(split.y, len(split), "split.y")
    if not (isinstance(max_dim, int) and max_dim >= 1):
        raise DataError(f"max_dim={max_dim!r} must be a positive integer")
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise DataError(f"chunk_size={chunk_size!r} must be a positive integer")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    depth = len(model.blocks)
    shapes = [tuple(model.features(split.x[:1].to(device), 0, k).shape[1:]) for k in range(depth + 1)]
    grids = [_flat_grid(shape, max_dim) for shape in shapes]
    dims = {"gap": [s[0] for s in shapes],
            "flat": [s[0] * (g[0] * g[1] if g else s[1] * s[2]) for s, g in zip(shapes, grids)]}
    # many samples: running sums (streamed); few: the rows themselves (one SVD later)
    sinks = {kind: [_FeatureStats(d, num_classes) if len(split) > d else [] for d in dims[kind]]
             for kind in FEATURE_KINDS}

    def feed(sink, x: torch.Tensor, labels: np.ndarray):
        x = x.flatten(1).cpu().numpy()
        sink.update(x, labels) if isinstance(sink, _FeatureStats) else sink.append(x.astype(np.float64))

    probs = []
    for i in tqdm(range(0, len(split), chunk_size), desc="cut scores", unit="chunk", disable=not progress):
        h, labels = split.x[i:i + chunk_size].to(device), y[i:i + chunk_size]
        for k in range(depth + 1):
            if k:
                h = model.blocks[k - 1](h)
            feed(sinks["gap"][k], h.mean((2, 3)), labels)
            feed(sinks["flat"][k], F.adaptive_avg_pool2d(h, grids[k]) if grids[k] else h, labels)
        probs.append(torch.softmax(model.head(h).double(), 1).cpu().numpy())
    model.train(was_training)
    probs = np.concatenate(probs)
    source_scores = {"leep": leep(probs, y), "nce": nce(probs.argmax(1), y)}
    rows = []
    for k in range(depth + 1):
        row = {"cut_point": k, "gap_dim": dims["gap"][k], "flat_dim": dims["flat"][k]}
        for kind in FEATURE_KINDS:
            row.update({f"{name}_{kind}": value
                        for name, value in _scores_of(sinks[kind][k], y, num_classes).items()})
        rows.append({**row, **source_scores})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- validation against sweeps

def score_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.split("_")[0] in SCORE_PREFIXES]


def _mean_accuracy(records) -> pd.DataFrame:
    """Mean test accuracy per (percentage, cut point) of transfer runs (baselines left out)."""
    frame = pd.DataFrame(list(records)) if not isinstance(records, pd.DataFrame) else records
    missing = [k for k in ("sampled_percentage", "sampled_cut_point", "test_acc") if k not in frame.columns]
    if missing:
        raise DataError(f"records lack {missing}; pass the run records of a results file (load_results(path)[1])")
    frame = frame.astype({"sampled_percentage": float, "sampled_cut_point": int, "test_acc": float})
    frame = frame[(frame["sampled_cut_point"] >= 0) & np.isfinite(frame["test_acc"])]
    if frame.empty:
        raise DataError("records hold no finished transfer run (only baselines or none); run the sweep first")
    grouped = frame.groupby(["sampled_percentage", "sampled_cut_point"])
    table = grouped["test_acc"].agg(test_acc="mean", test_acc_std="std", runs="count")
    if "n_train" in frame.columns:
        table["n_train"] = grouped["n_train"].mean()
    return table.reset_index().rename(columns={"sampled_percentage": "percentage", "sampled_cut_point": "cut_point"})


def _accepted_cuts(tolerance, percentage: float, best: int) -> set:
    for key, cuts in (tolerance or {}).items():
        if math.isclose(float(key), percentage, rel_tol=1e-9):
            return {int(c) for c in cuts} | {best}
    return {best}


def validate_against_sweeps(scores: pd.DataFrame, records, tolerance=None) -> pd.DataFrame:
    """Per percentage and score: Kendall's tau and Spearman's rho between the score and the mean
    test accuracy over cut points, the score's top cut, the best measured cut, and whether the
    top cut is acceptable: the best one or, given ``tolerance`` (percentage -> cut points not
    significantly worse than the best), one of those.  A score tied at its maximum over several
    cuts (LEEP and NCE are constant over cuts) has no top cut and is not acceptable."""
    accuracy = _mean_accuracy(records)
    by_cut = scores.set_index("cut_point")
    rows = []
    for percentage, measured in accuracy.groupby("percentage"):
        measured = measured.set_index("cut_point")["test_acc"]
        best = int(measured.idxmax())
        accepted = _accepted_cuts(tolerance, percentage, best)
        for column in score_columns(scores):
            score = by_cut[column].reindex(measured.index)
            keep = np.isfinite(score.to_numpy(float))
            s, a = score[keep], measured[keep]
            top = s.index[s == s.max()].tolist() if len(s) else []
            varied = len(s) >= 2 and s.nunique() > 1 and a.nunique() > 1
            rows.append({
                "percentage": percentage, "score": column,
                "kendall_tau": scipy_stats.kendalltau(s, a).statistic if varied else np.nan,
                "spearman_rho": scipy_stats.spearmanr(s, a).statistic if varied else np.nan,
                "score_top_cut": int(top[0]) if len(top) == 1 else pd.NA, "best_cut": best,
                "top_cut_ok": len(top) == 1 and top[0] in accepted, "n_cuts": int(keep.sum()),
            })
    result = pd.DataFrame(rows)
    result["score_top_cut"] = result["score_top_cut"].astype("Int64")
    return result


def _save_png_atomic(fig, path) -> None:
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120, metadata={"Software": None})


def plot_score_vs_accuracy(scores: pd.DataFrame, records, score: str = "logme_flat", path=None):
    """One panel per percentage: ``score`` of each cut point against its measured mean test
    accuracy, points labelled with the cut, Kendall's tau in the title.  Saved to ``path`` as
    PNG when given; returns the figure (built without pyplot: nothing stays open)."""
    if score not in scores.columns:
        raise DataError(f"no score column {score!r}; choose one of {score_columns(scores)}")
    accuracy = _mean_accuracy(records)
    table = validate_against_sweeps(scores[["cut_point", score]], records).set_index("percentage")
    percentages = sorted(accuracy["percentage"].unique())
    fig = Figure(figsize=(3.6 * len(percentages), 3.4))
    axes = fig.subplots(1, len(percentages), squeeze=False)
    by_cut = scores.set_index("cut_point")[score]
    for ax, percentage in zip(axes[0], percentages):
        measured = accuracy[accuracy["percentage"] == percentage]
        x = by_cut.reindex(measured["cut_point"]).to_numpy(float)
        ax.scatter(x, measured["test_acc"], color="tab:blue")
        for xi, yi, cut in zip(x, measured["test_acc"], measured["cut_point"]):
            ax.annotate(str(int(cut)), (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=8)
        ax.set_title(f"{percentage:g} of target data, tau = {table.loc[percentage, 'kendall_tau']:.2f}")
        ax.set_xlabel(score)
        ax.set_ylabel("mean test accuracy")
    fig.tight_layout()
    if path is not None:
        _save_png_atomic(fig, path)
    return fig


# ----------------------------------------------------------------------------- records and recommender

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
    accuracy = _mean_accuracy(records)
    per_percentage = scores if isinstance(scores, dict) else None
    frames = []
    for percentage, measured in accuracy.groupby("percentage"):
        table = scores
        if per_percentage is not None:
            matches = [v for k, v in per_percentage.items() if math.isclose(float(k), percentage, rel_tol=1e-9)]
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
        p, a = predicted[group.index], group["test_acc"]
        keep = np.isfinite(p.to_numpy(float))
        p, a, cuts = p[keep], a[keep], group["cut_point"][keep]
        if len(p) < 2 or p.nunique() < 2 or a.nunique() < 2:
            continue
        taus.append(scipy_stats.kendalltau(p, a).statistic)
        rhos.append(scipy_stats.spearmanr(p, a).statistic)
        top = cuts[p == p.max()]
        hits.append(len(top) == 1 and top.iloc[0] == cuts[a.idxmax()])
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
