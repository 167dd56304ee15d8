"""Each streaming head against a batch reference computed independently on the same data."""
import numpy as np
import pytest
import torch
from sklearn.covariance import OAS
from sklearn.linear_model import LogisticRegression, Ridge

from functions.efficiency import heads
from functions.core.errors import DataError


def blobs(n=120, dim=5, num_classes=3, seed=0):
    """Separable-ish Gaussian classes with a non-zero offset (so centring matters)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (num_classes, dim)) + 10.0
    y = rng.integers(0, num_classes, n)
    return centres[y] + rng.normal(0, 1, (n, dim)), y


def stream(head, x, y, batch_sizes=(1, 7, 3, 50)):
    """Feed all rows in batches of varying size."""
    i, k = 0, 0
    while i < len(x):
        size = batch_sizes[k % len(batch_sizes)]
        head.partial_fit(x[i:i + size], y[i:i + size])
        i, k = i + size, k + 1
    return head


def test_ridge_equals_sklearn_ridge_on_everything_seen():
    x, y = blobs()
    W, b = stream(heads.make_head("ridge", 5, 3), x, y).weights()
    reference = Ridge(alpha=1.0).fit(x, np.eye(3)[y])
    np.testing.assert_allclose(W, reference.coef_, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(b, reference.intercept_, rtol=1e-9, atol=1e-10)


def test_ridge_shrinks_towards_the_initial_head():
    x, y = blobs(n=30)
    rng = np.random.default_rng(1)
    W0, b0 = rng.normal(size=(3, 5)), rng.normal(size=3)
    W, b = stream(heads.make_head("ridge", 5, 3, init=[W0, b0]), x, y).weights()
    # minimising |XW' + b - Y|^2 + |W - W0|^2 is ridge on the residual targets Y - X W0'
    reference = Ridge(alpha=1.0).fit(x, np.eye(3)[y] - x @ W0.T)
    np.testing.assert_allclose(W, reference.coef_ + W0, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(b, reference.intercept_, rtol=1e-9, atol=1e-10)
    untouched = heads.make_head("ridge", 5, 3, init=[W0, b0]).weights()
    np.testing.assert_array_equal(untouched[0], W0)


def test_ncm_rows_are_the_class_means():
    x, y = blobs()
    W, b = stream(heads.make_head("ncm", 5, 3), x, y).weights()
    means = np.stack([x[y == c].mean(0) for c in range(3)])
    np.testing.assert_allclose(W, means, rtol=1e-12)
    np.testing.assert_allclose(b, -0.5 * (means ** 2).sum(1), rtol=1e-12)
    # the head is the nearest-mean rule
    distances = ((x[:, None, :] - means[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(heads.predict((W, b), x), distances.argmin(1))


def test_streaming_slda_equals_a_batch_fit_of_the_same_estimator():
    x, y = blobs(n=200, dim=6, num_classes=4)
    head = stream(heads.make_head("slda", 6, 4), x, y)
    means = np.stack([x[y == c].mean(0) for c in range(4)])
    pooled = OAS(assume_centered=True).fit(x - means[y]).covariance_ + heads.SLDA_EPSILON * np.eye(6)
    np.testing.assert_allclose(head.covariance(), pooled, rtol=1e-9, atol=1e-12)
    W_ref = np.linalg.solve(pooled, means.T).T
    W, b = head.weights()
    np.testing.assert_allclose(W, W_ref, rtol=1e-8)
    np.testing.assert_allclose(b, -0.5 * np.sum(means * W_ref, 1), rtol=1e-8)
    assert heads.accuracy((W, b), x, y) > 0.9


def test_logreg_refit_equals_a_fit_on_everything_seen():
    x, y = blobs(n=90)
    W, b = stream(heads.make_head("logreg_refit", 5, 3), x, y).weights()
    reference = LogisticRegression(max_iter=1000, tol=1e-10).fit(x, y)

    def objective(W, b):  # what scikit-learn minimises: L2 penalty + C * multinomial log-loss (C = 1)
        logits = x @ W.T + b
        logits -= logits.max(1, keepdims=True)
        return 0.5 * np.sum(W ** 2) - np.sum(logits[np.arange(len(y)), y] - np.log(np.exp(logits).sum(1)))

    # each refit starts from the previous one: the same optimum, to the solver's tolerance
    assert objective(W, b) == pytest.approx(objective(reference.coef_, reference.intercept_), rel=1e-5)
    np.testing.assert_allclose(W, reference.coef_, atol=5e-3)
    np.testing.assert_array_equal(heads.predict((W, b), x), reference.predict(x))


def test_logreg_binary_subset_keeps_the_sigmoid_decision():
    x, y = blobs(n=60, num_classes=2)
    head = heads.make_head("logreg_refit", 5, 4).partial_fit(x, y + 1)  # classes 1 and 2 of 4
    reference = LogisticRegression(max_iter=1000).fit(x, y + 1)
    np.testing.assert_array_equal(heads.predict(head.weights(), x), reference.predict(x))
    assert (head.weights()[1][[0, 3]] == heads.UNSEEN_BIAS).all()


def test_unseen_classes_keep_the_initial_rows():
    x, y = blobs(n=40)
    keep = y < 2
    W0, b0 = np.full((3, 5), 0.5), np.array([1.0, 2.0, 3.0])
    for method in ("ncm", "slda", "logreg_refit"):
        W, b = heads.make_head(method, 5, 3, init=[W0, b0]).partial_fit(x[keep], y[keep]).weights()
        np.testing.assert_array_equal(W[2], W0[2])
        assert b[2] == 3.0 and not np.allclose(W[:2], W0[:2])


def test_adam_head_is_torch_adam_on_a_linear_layer():
    x, y = blobs(n=40)
    head = heads.make_head("adam", 5, 3, seed=3, dropout=0.0)
    W0, b0 = head.weights()
    layer = torch.nn.Linear(5, 3).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(W0))
        layer.bias.copy_(torch.from_numpy(b0))
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-3)
    for i in range(0, 40, 4):
        head.partial_fit(x[i:i + 4], y[i:i + 4])
        loss = torch.nn.functional.cross_entropy(layer(torch.from_numpy(x[i:i + 4])), torch.from_numpy(y[i:i + 4]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    np.testing.assert_allclose(head.weights()[0], layer.weight.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(head.weights()[1], layer.bias.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_adam_is_seeded_and_starts_from_the_initial_head():
    x, y = blobs(n=20)
    a = stream(heads.make_head("adam", 5, 3, seed=1), x, y).weights()
    b = stream(heads.make_head("adam", 5, 3, seed=1), x, y).weights()
    c = stream(heads.make_head("adam", 5, 3, seed=2), x, y).weights()
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.allclose(a[0], c[0])
    bound = 1 / np.sqrt(5)
    assert np.abs(heads.make_head("adam", 5, 3, seed=4).weights()[0]).max() <= bound
    W0 = np.ones((3, 5))
    moved = heads.make_head("adam", 5, 3, init=[W0, np.zeros(3)]).partial_fit(x[:1], y[:1]).weights()[0]
    assert np.abs(moved - W0).max() <= 1e-3 + 1e-12 and not np.array_equal(moved, W0)


@pytest.mark.parametrize("features, labels, field", [
    ([[1.0, 2.0], [3.0]], [0, 1], "features"),
    ([[1.0, float("nan")]], [0], "features"),
    ([[1.0, 2.0]], [5], "labels"),
    ([[1.0, 2.0]], [0, 1], "labels"),
    ([[1.0, 2.0, 3.0]], [0], "features"),
])
def test_bad_batches_name_the_field(features, labels, field):
    with pytest.raises(DataError, match=field):
        heads.make_head("ncm", 2, 2).partial_fit(features, labels)


def test_bad_weights_and_method_name_the_problem():
    with pytest.raises(DataError, match="current_weights"):
        heads.make_head("adam", 2, 2, init=[[[1.0, 2.0]], [0.0]])
    with pytest.raises(DataError, match="unknown method"):
        heads.make_head("sgd", 2, 2)
