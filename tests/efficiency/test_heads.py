"""Each streaming head against a batch reference computed independently on the same data."""
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from sklearn.covariance import OAS, oas
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


def test_oas_shrinkage_equals_scikit_learn_where_it_is_partial():
    """Isotropic data shrinks fully (any formula gives the identity there): correlated features of
    different scales give a shrinkage strictly between 0 and 1, where every term of the formula counts."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 6)) @ (rng.normal(size=(6, 6)) * np.array([3, 2, 1, 0.5, 0.3, 0.1]))
    reference, shrinkage = oas(x, assume_centered=True)
    assert 0.05 < shrinkage < 0.5
    np.testing.assert_allclose(heads.oas_shrink(x.T @ x / 30, 30), reference, rtol=1e-12)
    # one sample per class leaves no within-class spread: the shrunk covariance is zero, not NaN
    np.testing.assert_array_equal(heads.oas_shrink(np.zeros((3, 3)), 3), np.zeros((3, 3)))


def test_streaming_slda_on_correlated_features_equals_the_batch_estimator():
    rng = np.random.default_rng(2)
    mixing = rng.normal(size=(4, 4)) * np.array([2.0, 1.0, 0.3, 0.1])
    y = np.arange(24) % 3
    x = rng.normal(size=(24, 4)) @ mixing + 3.0 * y[:, None]
    head = stream(heads.make_head("slda", 4, 3), x, y)
    means = np.stack([x[y == c].mean(0) for c in range(3)])
    pooled = OAS(assume_centered=True).fit(x - means[y]).covariance_ + heads.SLDA_EPSILON * np.eye(4)
    np.testing.assert_allclose(head.covariance(), pooled, rtol=1e-9, atol=1e-12)
    first = heads.make_head("slda", 4, 3).partial_fit(x[:1], y[:1])  # one sample: the epsilon ridge alone
    np.testing.assert_allclose(first.covariance(), heads.SLDA_EPSILON * np.eye(4), atol=1e-15)


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


def _torch_linear(W, b):
    """torch's Linear layer holding the head (W, b), in float64: the reference for the Adam head."""
    layer = torch.nn.Linear(W.shape[1], W.shape[0]).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(W))
        layer.bias.copy_(torch.from_numpy(b))
    return layer


def test_adam_head_is_torch_adam_on_a_linear_layer():
    x, y = blobs(n=40)
    head = heads.make_head("adam", 5, 3, seed=3, dropout=0.0)
    W0, b0 = head.weights()
    layer = _torch_linear(W0, b0)
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


# ----------------------------------------------------------------------------- defaults and edges

def test_documented_defaults_are_the_ones_used():
    x, y = blobs(n=30)
    default = stream(heads.make_head("adam", 5, 3), x, y).weights()
    explicit = stream(heads.make_head("adam", 5, 3, seed=0, lr=1e-3, dropout=0.2, betas=(0.9, 0.999), eps=1e-8),
                      x, y).weights()
    np.testing.assert_array_equal(default[0], explicit[0])
    np.testing.assert_array_equal(heads.AdamHead(5, 3).weights()[0], heads.AdamHead(5, 3, seed=0).weights()[0])
    strong = heads.make_head("logreg_refit", 5, 3, C=0.01).partial_fit(x, y).weights()
    reference = LogisticRegression(C=0.01, max_iter=1000).fit(x, y)
    np.testing.assert_allclose(strong[0], reference.coef_, atol=1e-3)


def test_adam_initial_biases_span_the_default_interval():
    b = heads.make_head("adam", 4, 50, seed=0).weights()[1]
    assert np.abs(b).max() <= 0.5 and b.min() < -0.25 < 0.25 < b.max()


def test_adam_dropout_is_inverted_dropout_with_the_heads_own_masks():
    """One step with p = 0.5: torch's Adam on the features masked and scaled by 1 / (1 - p), the
    mask being the head's next draw after its initial weights."""
    x, y = blobs(n=6)
    head = heads.make_head("adam", 5, 3, seed=7, dropout=0.5)
    W0, b0 = head.weights()
    rng = np.random.default_rng(np.random.SeedSequence([7, 1]))
    rng.uniform(size=(3, 5)), rng.uniform(size=3)  # the draws of the initial weights
    masked = x * (rng.random(x.shape) >= 0.5) / 0.5
    layer = _torch_linear(W0, b0)
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-3)
    torch.nn.functional.cross_entropy(layer(torch.from_numpy(masked)), torch.from_numpy(y)).backward()
    optimizer.step()
    head.partial_fit(x, y)
    np.testing.assert_allclose(head.weights()[0], layer.weight.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_unseen_classes_without_an_initial_head_are_never_predicted():
    x, y = blobs(n=40)
    for method in ("ncm", "slda", "logreg_refit"):
        W, b = heads.make_head(method, 5, 3).partial_fit(x[y < 2], y[y < 2]).weights()
        np.testing.assert_array_equal(W[2], np.zeros(5))
        assert b[2] == heads.UNSEEN_BIAS
    W, b = heads.make_head("logreg_refit", 5, 3).weights()  # nothing seen yet
    assert not W.any() and (b == heads.UNSEEN_BIAS).all()


def test_ridge_before_and_after_its_first_sample():
    W0, b0 = np.full((3, 5), 0.5), np.array([1.0, 2.0, 3.0])
    untouched = heads.make_head("ridge", 5, 3, init=[W0, b0]).weights()
    np.testing.assert_array_equal(untouched[1], b0)
    x, y = blobs(n=1)
    one = heads.make_head("ridge", 5, 3, init=[W0, b0]).partial_fit(x, y).weights()
    reference = Ridge(alpha=1.0).fit(x, np.eye(3)[y] - x @ W0.T)
    np.testing.assert_allclose(one[0], reference.coef_ + W0, rtol=1e-9, atol=1e-10)


def test_logreg_refits_as_the_classes_seen_grow():
    """Refits after more samples, first of two classes then of three, equal fresh fits."""
    x, y = blobs(n=90)
    order = np.argsort(y == 2, kind="stable")  # classes 0 and 1 first
    x, y = x[order], y[order]
    head = heads.make_head("logreg_refit", 5, 3)
    for end in (20, 40, 90):
        head.partial_fit(x[end - 20 if end < 90 else 40:end], y[end - 20 if end < 90 else 40:end])
        W, b = head.weights()
        reference = LogisticRegression(max_iter=1000).fit(x[:end], y[:end])
        np.testing.assert_array_equal(heads.predict((W, b), x[:end]), reference.predict(x[:end]))
    assert len(np.unique(y[:40])) == 2 and len(np.unique(y)) == 3


def test_inputs_are_taken_as_float64():
    W, b = heads.check_weights([[[1, 2]], [0]], num_classes=1, dim=2)
    x, labels = heads.check_batch([[1, 2]], [0], dim=2, num_classes=2)
    assert W.dtype == b.dtype == x.dtype == np.float64 and labels.dtype == np.int64
    assert heads.make_head("ncm", 1, 2).partial_fit([[1.0], [3.0]], [0, 1]).weights()[0].shape == (2, 1)


@pytest.mark.parametrize("call, field, message", [
    (lambda: heads.check_weights((1, 2, 3), 2, 3), "current_weights",
     "current_weights must be [W, b]: W a 2 x 3 list of rows, b a list of 2 biases"),
    (lambda: heads.check_weights("ab", 2, 3), "current_weights",
     "current_weights must be [W, b]: W a 2 x 3 list of rows, b a list of 2 biases"),
    (lambda: heads.check_weights([np.zeros((2, 3)), np.zeros(3)], 2, 3, field="updated_weights"), "updated_weights",
     "updated_weights has W of shape [2, 3] and b of shape [3]; expected [2, 3] and [2] (2 classes, 3 features)"),
    (lambda: heads.check_weights([[[1.0, 2.0], [3.0]], [0.0]], 2, 3), "current_weights",
     "current_weights is ragged or not numeric (setting an array element with a sequence. The requested array "
     "has an inhomogeneous shape after 1 dimensions. The detected shape was (2,) + inhomogeneous part.); W must be "
     "2 x 3, b of length 2"),
    (lambda: heads.check_batch([[1.0], [2.0, 3.0]], [0, 1], 1, 2), "features",
     "features is ragged or not numeric (setting an array element with a sequence. The requested array has an "
     "inhomogeneous shape after 1 dimensions. The detected shape was (2,) + inhomogeneous part.); give n rows of "
     "1 numbers"),
    (lambda: heads.check_weights([np.zeros((2, 3)), [0.0, np.inf]], 2, 3), "current_weights",
     "current_weights holds NaN or infinite values"),
    (lambda: heads.check_batch([[1.0, np.nan]], [0], 2, 2), "features", "features holds NaN or infinite values"),
    (lambda: heads.check_batch(np.zeros((0, 2)), [], 2, 2), "features",
     "features has shape [0, 2]; expected n rows of 2 numbers (n >= 1)"),
    (lambda: heads.check_batch([[1.0, 2.0]], [0.5], 2, 2), "labels",
     "labels must be 1 integers, one per row of features; got float64 of shape [1]"),
    (lambda: heads.check_batch(np.zeros((8, 2)), [0, 3, 4, 5, 6, 7, 8, 9], 2, 3), "labels",
     "labels [3, 4, 5, 6, 7] are outside 0..2 (num_classes=3)"),
    (lambda: heads.make_head("ncm", 2, 1), "num_classes", "num_classes=1: a classifier needs at least 2 classes"),
    (lambda: heads.make_head("ncm", 0, 2), "features",
     "features have 0 columns; give at least one feature per sample"),
    (lambda: heads.make_head("sgd", 2, 2), "method",
     "method: unknown method 'sgd'; choose one of ['adam', 'logreg_refit', 'ncm', 'ridge', 'slda']"),
])
def test_bad_input_messages_in_full(call, field, message):
    with pytest.raises(heads.InputError) as raised:
        call()
    assert raised.value.field == field and str(raised.value) == message


def test_the_label_equal_to_num_classes_is_refused():
    with pytest.raises(heads.InputError, match=r"labels \[2\] are outside 0\.\.1"):
        heads.check_batch([[1.0]], [2], 1, 2)


# ----------------------------------------------------------------------------- outside methods over HTTP

@pytest.fixture
def outside_method():
    """A real HTTP server on 127.0.0.1 playing the outside method: it records each request and
    answers with ``reply(payload) -> (status, body bytes)``."""
    requests, behaviour = [], {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append((self.path, payload))
            status, body = behaviour["reply"](payload)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/", requests, behaviour
    server.shutdown()
    server.server_close()


def plus_one(payload):
    W, b = (np.asarray(part) + 1.0 for part in payload["current_weights"])
    return 200, json.dumps({"updated_weights": [W.tolist(), b.tolist()]}).encode()


def test_remote_head_sends_each_batch_with_the_current_head_and_keeps_the_answer(outside_method):
    url, requests, behaviour = outside_method
    behaviour["reply"] = plus_one
    W0, b0 = np.zeros((2, 3)), np.array([0.5, -0.5])
    head = heads.RemoteHead(3, 2, init=[W0, b0], url=url)
    x, y = np.arange(6.0).reshape(2, 3), np.array([1, 0])
    head.partial_fit(x, y).partial_fit(x[:1], y[:1])
    head.close()
    assert [path for path, _ in requests] == ["/model/update_weights"] * 2
    first, second = requests[0][1], requests[1][1]
    assert first == {"features": x.tolist(), "labels": [1, 0], "num_classes": 2,
                     "current_weights": [W0.tolist(), b0.tolist()]}
    assert second["current_weights"] == [(W0 + 1).tolist(), (b0 + 1).tolist()]
    np.testing.assert_array_equal(head.weights()[0], W0 + 2)
    np.testing.assert_array_equal(head.weights()[1], b0 + 2)
    fresh = heads.RemoteHead(3, 2, url=url)
    assert not fresh.weights()[0].any() and not fresh.weights()[1].any() and fresh.weights()[0].shape == (2, 3)
    behaviour["reply"] = lambda payload: (200, json.dumps({"updated_weights": [[[1.0] * 3] * 2, [0.0, 0.0]]}).encode())
    fresh.partial_fit(x, y)
    assert requests[-1][1]["current_weights"] is None and fresh.weights()[0].sum() == 6.0


@pytest.mark.parametrize("reply, error, message", [
    (lambda p: (500, b"out of memory"), DataError, "answered 500: out of memory"),
    (lambda p: (200, b"not json"), DataError, r'did not answer \{"updated_weights": \[W, b\]\}'),
    (lambda p: (200, b'{"weights": 1}'), DataError, "did not answer"),
    (lambda p: (200, b'{"updated_weights": [[[1.0]], [0.0]]}'), heads.InputError,
     r"^updated_weights has W of shape \[1, 1\]"),
])
def test_remote_head_failures_name_the_outside_method(outside_method, reply, error, message):
    url, _, behaviour = outside_method
    behaviour["reply"] = reply
    with pytest.raises(error, match=message) as raised:
        heads.RemoteHead(3, 2, url=url).partial_fit(np.ones((1, 3)), [0])
    if error is DataError:
        assert f"the outside method at {url}model/update_weights" in str(raised.value)


def test_unreachable_outside_method_is_said_plainly():
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(DataError, match=f"cannot reach the outside method at http://127.0.0.1:{port}/model/update_weights"):
        heads.RemoteHead(3, 2, url=f"http://127.0.0.1:{port}").partial_fit(np.ones((1, 3)), [0])
