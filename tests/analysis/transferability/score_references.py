"""Independent implementations the score tests compare against, and the data they share."""
import numpy as np
from scipy.optimize import minimize
from scipy.stats import multivariate_normal
from sklearn.covariance import LedoitWolf


rng = np.random.default_rng


def clusters(n: int, dim: int, num_classes: int, spread: float, seed: int = 0):
    """Class-mean plus Gaussian noise features; small spread: separable."""
    r = rng(seed)
    y = np.arange(n) % num_classes
    return r.standard_normal((num_classes, dim))[y] * 3 + spread * r.standard_normal((n, dim)), y


def reference_logme(f: np.ndarray, y: np.ndarray) -> float:
    """Evidence of y ~ N(0, F F^T / alpha + I / beta) maximised numerically over log alpha, log beta."""
    n = len(f)
    gram = f @ f.T
    per_class = []
    for c in range(y.max() + 1):
        target = (y == c).astype(float)
        neg = lambda p: -multivariate_normal.logpdf(target, np.zeros(n), gram * np.exp(-p[0]) + np.eye(n) * np.exp(-p[1]))
        best = min((minimize(neg, start, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12,
                                                                          "maxiter": 4000})
                    for start in ([0.0, 0.0], [3.0, 2.0], [-3.0, 1.0])), key=lambda r: r.fun)
        per_class.append(-best.fun / n)
    return float(np.mean(per_class))


def reference_hscore(f: np.ndarray, y: np.ndarray, shrinkage: bool, rcond: float = 1e-10) -> float:
    """The formula itself; ``rcond``: eigenvalues of cov(f) below rcond times the largest count as zero."""
    f = f.astype(float)
    class_means = np.stack([f[y == c].mean(0) for c in range(y.max() + 1)])[y]
    between = np.atleast_2d(np.cov(class_means.T, bias=True))
    if not shrinkage:
        covariance = np.atleast_2d(np.cov(f.T, bias=True))
        return float(np.trace(np.linalg.pinv(covariance, rcond=rcond, hermitian=True) @ between))
    lw = LedoitWolf().fit(f)
    return float(np.trace(np.linalg.inv(lw.covariance_) @ ((1 - lw.shrinkage_) * between)))


def hand_made_records(accuracy_by_percentage: dict) -> list[dict]:
    return [{"lr": 0.001, "sampled_percentage": p, "sampled_cut_point": cut, "repeat": r,
             "train_acc": 1.0, "test_acc": acc + 0.001 * r}
            for p, accs in accuracy_by_percentage.items() for cut, acc in enumerate(accs) for r in range(2)] + \
        [{"lr": 0.001, "sampled_percentage": 0.1, "sampled_cut_point": -1, "repeat": 0, "train_acc": 1.0,
          "test_acc": 0.99}]
