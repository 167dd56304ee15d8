"""Two newer transferability scores on frozen features (higher is better for both):

* SFDA (Shao et al., ECCV 2022, "Not All Models Are Equal: Predicting Model Transferability
  in a Self-challenging Fisher Space"): how well a regularised Fisher discriminant still
  predicts the labels after the hard samples have been pulled towards their class means.
* N-LEEP (Li et al., CVPR 2021): LEEP with the source head replaced by a Gaussian mixture fitted
  to the (PCA-reduced) features, so it needs no source classifier.

Both take ``(features, labels)`` like ``logme``: an (n, d) array or tensor of frozen features
and integer labels 0..C-1.  SFDA builds d x d scatter matrices (O(n d^2 + d^3)), so pool
features to a few thousand dimensions first, as ``cut_scores(max_dim=...)`` does.
"""
from __future__ import annotations

import numpy as np
from scipy import linalg
from scipy.special import softmax
from sklearn.mixture import GaussianMixture

from ...core.errors import DataError
from .scores import check_features, check_labels, one_hot, leep

SHRINKAGE_RATE = 5.0  # SFDA's adaptive shrinkage exp(-rate * largest eigenvalue of S_W)
# Added to the shrunk within-class scatter (standardised units: every varying feature has unit
# variance).  It only matters when S_W is singular (constant features, classes without spread,
# fewer samples than dimensions), where it keeps the discriminant finite.
RIDGE = 1e-8
GMM_MAX_ITER = 200


# ----------------------------------------------------------------------------- SFDA

def _standardise(f: np.ndarray) -> np.ndarray:
    """Float64 features with every column centred and scaled to unit variance; constant columns
    become 0.  SFDA's shrinkage strength depends on the scale of S_W, so one fixed convention
    makes the score independent of each feature's units (and of shifts)."""
    x = np.asarray(f, dtype=np.float64)
    x = x - x.mean(0)
    scale = np.sqrt(np.mean(x * x, axis=0))
    varying = (np.ptp(f, axis=0) > 0) & (scale > 0)
    x[:, ~varying] = 0.0
    return x / np.where(varying, scale, 1.0)


def _regularised_fda(x: np.ndarray, y: np.ndarray, num_classes: int,
                     shrinkage: float | None = None) -> tuple[np.ndarray, float, np.ndarray]:
    """p(y|x) of SFDA's regularised Fisher discriminant, its shrinkage strength and the class means.

    S_W (prior-weighted class covariances) is shrunk to ``(1 - a) S_W + a tr(S_W)/d I`` with
    ``a = exp(-5 lambda_max(S_W))`` unless ``shrinkage`` gives ``a``.  The paper projects on the
    generalised eigenvectors V of (S_B, S_W shrunk), S_B = S_T - S_W shrunk, and scores classes
    with ``coef = means V V^T``.  Keeping every direction, V^T S_W V = I gives V V^T = S_W^-1
    whatever S_B is, so the discriminant is computed from one eigendecomposition of S_W (which
    also gives lambda_max, and clips its round-off negatives) instead of the generalised problem.
    """
    n, d = x.shape
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    means = (one_hot(y, num_classes).T @ x) / counts[:, None]
    within = x - means[y]
    values, vectors = linalg.eigh(within.T @ within / n)
    values = np.maximum(values, 0.0)
    if shrinkage is None:
        shrinkage = float(np.exp(-SHRINKAGE_RATE * values[-1]))
    shrunk = (1 - shrinkage) * values + shrinkage * values.sum() / d + RIDGE
    projected = means @ vectors
    coef = (projected / shrunk) @ vectors.T                       # means S_W^-1
    intercept = -0.5 * np.einsum("cd,cd->c", means, coef) + np.log(counts / n)
    return softmax(x @ coef.T + intercept, axis=1), shrinkage, means


def sfda(features, labels) -> float:
    """SFDA: mean probability of the true class under a regularised Fisher discriminant refitted
    after a self-challenge (higher: classes stay separable even for the hard samples; in (0, 1]).

    Features are standardised per column first (centred, unit variance, constant columns set to 0;
    see ``_standardise``).  Stage one fits the regularised discriminant; its probabilities are
    softened by a second softmax and each sample moves towards its class mean in proportion to
    how unsure the model is about its true class (``x <- p x + (1 - p) mean``: "ConfMix");
    stage two refits on the mixed features with the stage-one shrinkage strength.  With fewer
    samples than dimensions S_W is singular and the discriminant separates almost any labelling,
    so the score then nears 1 for most features: compare models at equal n and d."""
    f = check_features(features)
    y, num_classes = check_labels(labels, len(f))
    x = _standardise(f)
    rows = np.arange(len(y))
    probs, shrinkage, means = _regularised_fda(x, y, num_classes)
    sure = softmax(probs, axis=1)[rows, y][:, None]
    mixed = sure * x + (1 - sure) * means[y]
    probs, _, _ = _regularised_fda(mixed, y, num_classes, shrinkage)
    return float(probs[rows, y].mean())


# ----------------------------------------------------------------------------- N-LEEP

def _principal_components(f: np.ndarray, variance: float) -> np.ndarray | None:
    """Scores on the fewest principal axes that keep ``variance`` of the total, scaled so the kept
    components have unit mean variance (the mixture's fixed covariance floor is then relative);
    None when the features do not vary.  Eigendecomposes the smaller Gram matrix."""
    x = np.asarray(f, dtype=np.float64)
    x = x - x.mean(0)
    n, d = x.shape
    if n > d:
        values, axes = linalg.eigh(x.T @ x)
        values, axes = np.maximum(values[::-1], 0.0), axes[:, ::-1]
    else:
        values, left = linalg.eigh(x @ x.T)
        values, left = np.maximum(values[::-1], 0.0), left[:, ::-1]
    total = values.sum()
    if total <= 0:
        return None
    keep = int(np.searchsorted(np.cumsum(values) / total, variance - 1e-12)) + 1
    keep = min(keep, int(np.count_nonzero(values > 0)))
    scores = x @ axes[:, :keep] if n > d else left[:, :keep] * np.sqrt(values[:keep])
    return scores / np.sqrt(values[:keep].mean() / n)


def nleep(features, labels, components_per_class: int = 5, variance: float = 0.8, seed: int = 0) -> float:
    """N-LEEP: LEEP with a Gaussian mixture over the features as the source head (higher: mixture
    components are purer in target labels; 0 is the maximum).

    The features are reduced by PCA to the fewest axes keeping ``variance`` of their variance; a
    diagonal-covariance Gaussian mixture with ``components_per_class * C`` components (at most the
    number of distinct samples; k-means start from ``seed``, so the score is deterministic) is fitted,
    and its posterior responsibilities p(z|x) are the source probabilities of ``leep``.  Features
    that do not vary give every sample the same responsibilities, whose LEEP is minus the label
    entropy, returned directly."""
    f = check_features(features)
    y, num_classes = check_labels(labels, len(f))
    if isinstance(components_per_class, bool) or not isinstance(components_per_class, (int, np.integer)) \
            or components_per_class < 1:
        raise DataError(f"components_per_class must be a positive integer, got {components_per_class!r}")
    if not 0 < variance <= 1:
        raise DataError(f"variance is the fraction of feature variance PCA keeps, in (0, 1]; got {variance!r}")
    z = _principal_components(f, float(variance))
    if z is None:
        priors = np.bincount(y) / len(y)
        return float(priors @ np.log(priors))
    components = min(int(components_per_class) * num_classes, len(np.unique(z, axis=0)))
    mixture = GaussianMixture(components, covariance_type="diag", max_iter=GMM_MAX_ITER, random_state=seed)
    return min(leep(mixture.fit(z).predict_proba(z), y), 0.0)   # pure components: log(1 + round-off)
