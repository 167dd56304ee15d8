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
streamed chunk by chunk; otherwise from one SVD of the samples.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.linalg import eigh_tridiagonal, lapack

from ...core.errors import DataError

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

def check_features(features, name: str = "features") -> np.ndarray:
    f = features.detach().cpu().numpy() if hasattr(features, "detach") else np.asarray(features)
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


def check_labels(labels, n: int, name: str = "labels", contiguous: bool = True) -> tuple[np.ndarray, int]:
    """Integer labels, one per sample; target labels must be 0..C-1 with every class present."""
    y = labels.detach().cpu().numpy() if hasattr(labels, "detach") else np.asarray(labels)
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


def one_hot(y: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes)[y]


# ----------------------------------------------------------------------------- sufficient statistics

class FeatureStats:
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
        self.class_sums += one_hot(y, self.num_classes).T @ u
        self.counts += np.bincount(y, minlength=self.num_classes)
        self.sq_norm_weighted += sq @ u
        self.fourth += sq @ sq

    @classmethod
    def of(cls, features: np.ndarray, y: np.ndarray, num_classes: int) -> "FeatureStats":
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

def logme_spectrum_from_stats(stats: FeatureStats):
    sigma, projected2 = _eigen_projections(stats.raw_gram(), stats.raw_cross())   # (V^T F^T y)^2 = s^2 (U^T y)^2
    keep = _above_noise(sigma, stats.n, stats.dim)
    sigma = sigma[keep]
    z2 = projected2[keep] / sigma[:, None]
    return sigma, z2, stats.counts - z2.sum(0), stats.n, stats.dim


def logme_spectrum_from_samples(f: np.ndarray, y: np.ndarray, num_classes: int):
    u, s = _left_singular(np.asarray(f, dtype=np.float64))
    keep = _above_noise(s, *f.shape)
    z2 = (u[:, keep].T @ one_hot(y, num_classes)) ** 2
    return s[keep] ** 2, z2, np.bincount(y, minlength=num_classes) - z2.sum(0), *f.shape


def log_evidence(sigma: np.ndarray, z2: np.ndarray, residual0: np.ndarray, n: int, d: int) -> np.ndarray:
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
        return logme_spectrum_from_stats(FeatureStats.of(f, y, num_classes))
    return logme_spectrum_from_samples(f, y, num_classes)


def logme(features, labels) -> float:
    """LogME: mean over target classes of the per-sample log maximum evidence (higher: the
    features explain the labels with a simpler linear model).  Invariant to feature scale."""
    f = check_features(features)
    y, num_classes = check_labels(labels, len(f))
    return float(log_evidence(*_logme_spectrum(f, y, num_classes)).mean())


# ----------------------------------------------------------------------------- H-scores

def _ledoit_wolf_shrinkage(n: int, p: int, cov_trace: float, cov_frob2: float, fourth: float) -> float:
    """Ledoit & Wolf (2004)'s shrinkage intensity towards (trace/p) I, from the covariance's
    trace and squared Frobenius norm and the samples' summed |x - mean|^4."""
    mu = cov_trace / p
    spread = (cov_frob2 - 2 * mu * cov_trace + p * mu * mu) / p
    noise = (fourth / n - cov_frob2) / (p * n)
    return float(min(max(noise, 0.0), spread) / spread) if spread > 0 else 0.0


def hscore_spectrum_from_stats(stats: FeatureStats):
    lam, between2 = _eigen_projections(stats.covariance(), stats.between_vectors().T)
    lam, between2 = np.maximum(lam, 0.0), between2.sum(1)
    shrinkage = _ledoit_wolf_shrinkage(stats.n, stats.dim, lam.sum(), (lam ** 2).sum(), stats.centred_fourth_moment())
    return lam, between2, shrinkage, stats.n, stats.dim


def hscore_spectrum_from_samples(f: np.ndarray, y: np.ndarray, num_classes: int):
    n, p = f.shape
    centred = np.asarray(f, dtype=np.float64) - np.mean(f, axis=0, dtype=np.float64)
    u, s = _left_singular(centred)
    counts = np.bincount(y, minlength=num_classes)
    # between-class vectors projected on the principal axes: sqrt(p_c) * class mean of u, times s
    class_means_u = (one_hot(y, num_classes).T @ u) / counts[:, None]
    between2 = (np.sqrt(counts / n)[:, None] * class_means_u * s) ** 2
    lam = s ** 2 / n
    fourth = float((np.einsum("ij,ij->i", centred, centred) ** 2).sum())
    return lam, between2.sum(0), _ledoit_wolf_shrinkage(n, p, lam.sum(), (lam ** 2).sum(), fourth), n, p


def hscore_value(lam: np.ndarray, between2: np.ndarray, shrinkage: float, n: int, p: int,
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
        return hscore_spectrum_from_stats(FeatureStats.of(f, y, num_classes))
    return hscore_spectrum_from_samples(f, y, num_classes)


def hscore(features, labels, shrinkage: bool = False) -> float:
    """H-score: ``tr(cov(f)^+ cov(E[f|y]))``, how much of the features' variance separates the
    classes (pseudo-inverse over the resolvable spectrum).  ``shrinkage=True``: Ledoit-Wolf shrunk
    covariance, ``tr(cov_a^-1 (1 - a) cov(E[f|y]))``, stable when samples are few."""
    f = check_features(features)
    y, num_classes = check_labels(labels, len(f))
    return hscore_value(*_hscore_spectrum(f, y, num_classes), shrink=shrinkage)


# ----------------------------------------------------------------------------- source-head scores

def leep(source_probs, labels) -> float:
    """LEEP: mean log-probability of the true target label under the source head's softmax
    composed with the empirical P(target | source label).  0 is the maximum."""
    theta = check_features(source_probs, "source_probs").astype(np.float64)
    y, num_classes = check_labels(labels, len(theta))
    if theta.min() < 0 or not np.allclose(theta.sum(1), 1.0, atol=1e-3):
        raise DataError("source_probs rows must be probabilities (non-negative, summing to 1); "
                        "apply softmax to the source head's logits")
    joint = one_hot(y, num_classes).T @ theta / len(theta)          # P(y, z)
    source_marginal = joint.sum(0)
    conditional = np.divide(joint, source_marginal, out=np.zeros_like(joint), where=source_marginal > 0)
    expected = np.einsum("iz,iz->i", theta, conditional[y])
    return float(np.log(expected).mean())


def nce(source_labels, labels) -> float:
    """NCE: -H(target label | source head's predicted label); 0 when the source prediction
    determines the target label, about -H(target label) when it says nothing about it."""
    y, num_classes = check_labels(labels, len(np.asarray(labels)))
    z, _ = check_labels(source_labels, len(y), "source_labels", contiguous=False)
    _, z = np.unique(z, return_inverse=True)
    joint = np.zeros((num_classes, z.max() + 1))
    np.add.at(joint, (y, z), 1.0)
    joint /= len(y)
    source_marginal = np.broadcast_to(joint.sum(0), joint.shape)
    seen = joint > 0
    return float((joint[seen] * np.log(joint[seen] / source_marginal[seen])).sum())


