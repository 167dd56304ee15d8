"""The benchmark protocol: milestone rule, the shared seeded stream, extractors and the feature cache."""
import json

import numpy as np
import pytest
import torch
import torchvision

from functions.efficiency import heads
from functions.efficiency import benchmark as se
from functions.efficiency.milestone import milestone, relative_efficiency, stream_order
from functions.models import extractors
from functions.config import Config, source_params
from functions.core.errors import DataError
from functions.models.backbones import Backbone
from functions.models.files import save_model
from functions.models.registry import IMAGENET_MEAN, IMAGENET_STD, PretrainedRecord
from functions.models.study_cnn import build


# ----------------------------------------------------------------------------- milestone rule

def test_milestone_is_the_sample_count_at_the_end_of_the_window():
    samples = [10, 20, 30, 40, 50, 60]
    assert milestone(samples, [0.5, 0.8, 0.9, 0.85, 0.7, 0.9], threshold=0.8, window=3) == 40
    assert milestone(samples, [0.9] * 6, threshold=0.8, window=1) == 10


def test_milestone_never_reached_is_none():
    assert milestone([1, 2, 3], [0.9, 0.9, 0.7], threshold=0.8, window=3) is None
    assert milestone([], [], window=1) is None


def test_a_dip_restarts_the_count():
    accuracy = [0.9, 0.9, 0.79, 0.9, 0.9, 0.9]
    assert milestone([1, 2, 3, 4, 5, 6], accuracy, threshold=0.8, window=3) == 6
    assert milestone([1, 2, 3, 4, 5, 6], accuracy[:5], threshold=0.8, window=3) is None


def test_milestone_defaults_are_the_protocols_threshold_and_window():
    """Without arguments: accuracy of at least 0.8 for 10 consecutive evaluations."""
    samples = list(range(1, 21))
    assert milestone(samples, [0.8] * 10 + [0.0] * 10) == 10
    assert milestone(samples, [0.8] * 9 + [0.0] + [0.8] * 9 + [0.0]) is None
    assert milestone(samples, [0.79] * 20) is None


def test_relative_efficiency_is_baseline_over_method():
    assert relative_efficiency(400, 100) == 4.0
    assert relative_efficiency(100, 25) == 4.0 and relative_efficiency(25, 100) == 0.25
    assert relative_efficiency(None, 100) is None and relative_efficiency(400, None) is None


# ----------------------------------------------------------------------------- the stream

def synthetic_features(n=300, dim=4, num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (num_classes, dim))
    y = rng.integers(0, num_classes, n + 200)
    x = (centres[y] + rng.normal(0, 1, (len(y), dim))).astype(np.float32)
    return se.TaskFeatures(x[:n], y[:n], x[n:], y[n:], num_classes, key="synthetic")


class Recorder(heads.NCMHead):
    """An NCM head that remembers every batch it was given."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = []

    def _update(self, x, y):
        self.batches.append(x.copy())
        super()._update(x, y)


def test_batches_and_evaluation_points_follow_the_protocol():
    features = synthetic_features()
    head = Recorder(4, 3)
    order = stream_order(0, 300, 23)
    curve = se.learning_curve(head, features, order, se.Protocol(batch_size=3, max_samples=23, evaluation_frequency=5))
    assert [len(b) for b in head.batches] == [3] * 7 + [2]
    np.testing.assert_array_equal(np.concatenate(head.batches), features.train_x[order])
    assert curve.samples == [6, 12, 15, 21]  # each time the count crosses a multiple of 5
    assert len(curve.accuracy) == 4 and 0 <= curve.final_accuracy <= 1


def separable_features(seed=0):
    """Two well separated classes in 16 dimensions, far from the origin: the adam baseline reaches
    the milestone within a few hundred samples, the closed-form heads within a few dozen."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 30, (2, 16))
    y = rng.integers(0, 2, 500)
    x = (centres[y] + rng.normal(0, 10, (500, 16))).astype(np.float32)
    return se.TaskFeatures(x[:300], y[:300], x[300:], y[300:], 2, key="separable")


@pytest.fixture
def recorded_batches(monkeypatch):
    """Every head the benchmark builds records the batches it is given: [(method, [(x, y), ...]), ...]."""
    made, make_head = [], heads.make_head

    def recording(method, *args, **kwargs):
        head, batches = make_head(method, *args, **kwargs), []
        made.append((method, batches))
        partial_fit = head.partial_fit

        def record(features, labels):
            batches.append((np.array(features, copy=True), np.array(labels, copy=True)))
            return partial_fit(features, labels)

        head.partial_fit = record
        return head

    monkeypatch.setattr(heads, "make_head", recording)
    return made


def test_every_method_sees_the_same_seeded_stream(recorded_batches):
    a, b = stream_order(5, 300, 50), stream_order(5, 300, 50)
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 50 and not np.array_equal(a, stream_order(6, 300, 50))
    features = synthetic_features()
    protocol = se.Protocol(batch_size=3, max_samples=40, evaluation_frequency=4, threshold=0.6, window=2)
    se.compare_to_baseline(features, "ridge", protocol, seed=2)
    (custom, custom_batches), (baseline, baseline_batches) = recorded_batches
    assert (custom, baseline) == ("ridge", "adam")
    assert [len(x) for x, _ in custom_batches] == [3] * 13 + [1]
    assert len(baseline_batches) == len(custom_batches)
    for (x, y), (bx, by) in zip(custom_batches, baseline_batches):
        np.testing.assert_array_equal(x, bx)
        np.testing.assert_array_equal(y, by)
    order = stream_order(2, 300, 40)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in custom_batches]), features.train_x[order])
    np.testing.assert_array_equal(np.concatenate([y for _, y in custom_batches]), features.train_y[order])


def test_relative_efficiency_of_a_method_that_needs_fewer_samples_than_the_baseline():
    features = separable_features()
    protocol = se.Protocol(max_samples=300, evaluation_frequency=5, threshold=0.8, window=2)
    result = se.compare_to_baseline(features, "ridge", protocol, seed=1)
    custom, baseline = result["custom_milestone"], result["baseline_milestone"]
    assert isinstance(custom, int) and isinstance(baseline, int) and custom < baseline
    assert (custom, baseline) == (se.run_method("ridge", features, protocol, 1)[1],
                                  se.run_method("adam", features, protocol, 1)[1])
    assert result["relative_efficiency"] == baseline / custom > 1
    same = se.compare_to_baseline(features, "adam", protocol, seed=1)
    assert same["learning_curves"]["custom_acc"] == same["learning_curves"]["baseline_acc"]
    assert same["custom_milestone"] == same["baseline_milestone"] == baseline
    assert same["relative_efficiency"] == 1.0


def test_custom_weights_start_the_custom_method():
    features = synthetic_features()
    start = [np.zeros((3, 4)), np.array([0.0, 0.0, 9.0])]  # class 2 until the head learns otherwise
    result = se.compare_to_baseline(features, "ncm", se.Protocol(max_samples=1), seed=0, custom_weights=start)
    seen = features.train_y[stream_order(0, 300, 1)[0]]
    W, b = heads.make_head("ncm", 4, 3, init=start).partial_fit(
        features.train_x[stream_order(0, 300, 1)].astype(float), [seen]).weights()
    expected = heads.accuracy((W, b), features.val_x.astype(float), features.val_y)
    assert result["learning_curves"]["custom_acc"] == [expected]


@pytest.mark.parametrize("changes, field", [({"batch_size": 0}, "batch_size"), ({"max_samples": 301}, "max_samples"),
                                            ({"evaluation_frequency": -1}, "evaluation_frequency"),
                                            ({"threshold": 1.5}, "threshold")])
def test_bad_protocols_name_the_field(changes, field):
    with pytest.raises(heads.InputError, match=field):
        se.Protocol(**changes).check(300)


def test_summary_counts_never_reached_and_pairs_seeds():
    records = [{"method": "adam", "seed": 0, "milestone": 40, "relative_efficiency": 1.0, "final_accuracy": 0.9},
               {"method": "adam", "seed": 1, "milestone": None, "relative_efficiency": None, "final_accuracy": 0.7},
               {"method": "slda", "seed": 0, "milestone": 10, "relative_efficiency": 4.0, "final_accuracy": 0.95},
               {"method": "slda", "seed": 1, "milestone": 20, "relative_efficiency": None, "final_accuracy": 0.9}]
    table = se.summary(records)
    assert table.loc["adam", "never reached"] == "1/2" and table.loc["slda", "never reached"] == "0/2"
    assert table.loc["slda", "milestone median"] == 15 and table.loc["slda", "relative efficiency"] == 4.0
    assert "never" not in se.format_summary(table).split("\n")[1]


@pytest.mark.parametrize("reached", [True, False])
def test_study_figures_are_drawn_whether_or_not_any_method_reached_the_milestone(tmp_path, reached):
    samples = [1, 2, 3, 4]
    records = [{"method": m, "seed": s, "milestone": (3 + s if reached and m == "slda" else None),
                "samples": samples, "accuracy": [0.2, 0.5, 0.7 + 0.1 * reached, 0.9 * reached]}
               for m in ("adam", "slda") for s in range(3)]
    params = {"threshold": 0.8, "window": 2, "max_samples": 4, "dataset": "MNIST", "classes": [5, 6]}
    paths = se.plot_study(records, params, tmp_path / "figures" / "study")
    assert [p.name for p in paths] == ["study_curves.png", "study_milestones.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


# ----------------------------------------------------------------------------- extractors and cache

def _identity_extractor(in_shape, mean, std):
    record = PretrainedRecord("t", "test", "identity", in_shape[1], in_shape[0], mean, std, in_shape[1], "file")
    return extractors.Extractor(Backbone(record, {"pixels": torch.nn.Identity()}, network=torch.nn.Identity()))


def test_adapt_converts_channels_and_size():
    rgb = _identity_extractor((3, 8, 8), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    grey = _identity_extractor((1, 4, 4), (0.5,), (0.5,))
    image = torch.rand(1, 1, 8, 8)
    assert torch.equal(rgb.adapt(image), image.expand(-1, 3, -1, -1))
    colour = torch.rand(1, 3, 4, 4)
    luma = 0.299 * colour[:, 0] + 0.587 * colour[:, 1] + 0.114 * colour[:, 2]
    torch.testing.assert_close(grey.adapt(colour)[:, 0], (luma - 0.5) / 0.5)
    assert grey.adapt(torch.rand(2, 4, 9, 7)).shape == (2, 1, 4, 4)


@pytest.mark.parametrize("arch, dim", [("mobilenet_v2", 1280), ("resnet50", 2048)])
def test_a_torchvision_network_serves_as_extractor_from_a_weights_file(tmp_path, arch, dim):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None)
    path = tmp_path / f"{arch}.pth"
    torch.save(model.state_dict(), path)
    extractor = se.build_extractor(arch, str(path), input_size=32)
    assert extractor.dim == dim and extractor.in_shape == (3, 32, 32)
    grey = torch.rand(3, 1, 28, 28)
    features = extractor(grey)
    # by hand: grey repeated into RGB, resized, ImageNet-normalised, body, global average pool
    x = torch.nn.functional.interpolate(grey.expand(-1, 3, -1, -1), size=(32, 32), mode="bilinear", antialias=True)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    body = model.features if arch == "mobilenet_v2" else torch.nn.Sequential(*list(model.children())[:-2])
    with torch.no_grad():
        expected = body.eval()(x).mean(dim=(2, 3)).numpy()
    assert features.shape == (3, dim)
    np.testing.assert_allclose(features, expected, rtol=1e-3, atol=1e-4)  # memory layouts round differently
    with pytest.raises(DataError, match="is not a state-dict file of"):
        se.build_extractor("resnet50" if arch == "mobilenet_v2" else "mobilenet_v2", str(path), input_size=32)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    cfg = Config(num_channels=8, depth=3)
    path = tmp_path_factory.mktemp("model") / "source.pt"
    model = build(cfg, (1, 28, 28), 5, seed=0)
    save_model(path, model, {"config": source_params(cfg), "in_shape": [1, 28, 28]})
    return path


def extractor_of(path, cut=None):
    return se.build_extractor("study", str(path), cut=cut)


def test_study_extractor_pools_the_cut_activation(model_file):
    extractor = extractor_of(model_file, cut=2)
    model = extractor.backbone.network
    x = torch.rand(4, 1, 28, 28)
    expected = model.features((x - 0.1307) / 0.3081, 0, 2).mean(dim=(2, 3))
    np.testing.assert_allclose(extractor(x), expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(DataError, match="cut"):
        extractor_of(model_file, cut=4)


def test_features_are_extracted_once_then_read_from_the_cache(model_file, tmp_path, monkeypatch):
    extractor = extractor_of(model_file)
    model = extractor.backbone.network
    task = se.TargetTask("MNIST", (5, 6), pool=50)
    first = se.task_features(extractor, task, cache_dir=tmp_path, log=lambda *_: None)
    assert first.train_x.shape == (50, 8) and not first.from_cache and len(first.val_y) > 1000
    monkeypatch.setattr(se, "load_task", lambda *a, **k: pytest.fail("features were extracted again"))
    again = se.task_features(extractor, task, cache_dir=tmp_path)
    assert again.from_cache and np.array_equal(again.train_x, first.train_x)
    monkeypatch.undo()
    with torch.no_grad():
        model.blocks[0].conv.weight.mul_(2)  # other weights: another cache entry
    other = se.task_features(extractors.Extractor(extractor.backbone), task, cache_dir=tmp_path, log=lambda *_: None)
    assert not other.from_cache and other.key != first.key and np.array_equal(other.val_y, first.val_y)


def test_study_records_each_seeds_relative_efficiency_against_that_seeds_baseline(model_file, tmp_path,
                                                                                 monkeypatch):
    features = separable_features()
    monkeypatch.setattr(se, "task_features", lambda *args, **kwargs: features)
    study = se.run_study("MNIST", task="binary", methods=("ridge", "ncm"), seeds=3, max_samples=300,
                         evaluation_frequency=5, threshold=0.8, window=2, weights=str(model_file),
                         results_dir=tmp_path, plot=False, progress=False, log=lambda *_: None)
    params, *records = json.loads(study.path.read_text())
    milestone = {(r["method"], r["seed"]): r["milestone"] for r in records}
    assert sorted(milestone) == sorted((m, s) for m in ("adam", "ridge", "ncm") for s in range(3))
    assert all(isinstance(value, int) for value in milestone.values())
    ratios = []
    for r in records:
        baseline = milestone[("adam", r["seed"])]
        assert r["relative_efficiency"] == baseline / r["milestone"]
        ratios.append((r["method"], r["relative_efficiency"]))
    assert any(value > 1 for method, value in ratios if method == "ridge")
    for method in ("ridge", "ncm"):
        assert study.table.loc[method, "relative efficiency"] == np.median([v for m, v in ratios if m == method])


def test_study_resumes_and_refuses_other_parameters(model_file, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_FEATURE_CACHE", str(tmp_path / "features"))
    kwargs = dict(task="binary", methods=("ridge",), seeds=2, max_samples=20, evaluation_frequency=2, window=2,
                  weights=str(model_file), pool=60, results_dir=tmp_path, plot=False, progress=False,
                  log=lambda *_: None)
    first = se.run_study("MNIST", **kwargs)
    params, *records = json.loads(first.path.read_text())
    assert params["pool_size"] == 60 and len(records) == 4
    assert all(len(r["samples"]) == 10 and r["samples"][-1] == 20 for r in records)
    more = se.run_study("MNIST", **{**kwargs, "seeds": 3})
    assert len(more.records) == 6 and more.records[:4] == records
    with pytest.raises(DataError, match="batch_size"):
        se.run_study("MNIST", **{**kwargs, "batch_size": 2})
