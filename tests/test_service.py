"""The HTTP service: every endpoint, bad input, a real uvicorn process, concurrency and a schema fuzz."""
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import schemathesis
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from functions.efficiency import heads
from functions.efficiency import benchmark as se
from functions.models import extractors
from functions.config import Config, source_params
from functions.core.paths import REPO_ROOT
from functions.models.study_cnn import build
from functions.efficiency.service import Settings, create_app, load_state

POOL = 200


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    """A small source model file and a feature cache: the service starts in seconds."""
    folder = tmp_path_factory.mktemp("service")
    cfg = Config(num_channels=8, depth=3)
    model = build(cfg, (1, 28, 28), 5, seed=0)
    path = folder / "source.pt"
    torch.save({"config": source_params(cfg), "in_shape": [1, 28, 28], "state_dict": model.state_dict()}, path)
    env = {"TRANSFER_SERVICE_MODEL": str(path), "TRANSFER_SERVICE_POOL": str(POOL),
           "TRANSFER_SERVICE_TASK": "binary", "TRANSFER_FEATURE_CACHE": str(folder / "features")}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        yield env


@pytest.fixture(scope="module")
def state(service_env):
    return load_state(Settings.from_env(), log=lambda *_: None)


@pytest.fixture(scope="module")
def client(state):
    return TestClient(create_app(state=state))


def loc_names(response) -> str:
    return json.dumps(response.json()["detail"])


def rgb_images(n=20, side=160, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, side, side, 3)).tolist()


# ----------------------------------------------------------------------------- endpoints

def test_root_and_health_describe_the_service(client, state):
    info = client.get("/").json()
    assert info["task"]["classes"] == [5, 6] and info["task"]["pool_size"] == POOL
    assert info["extractor"]["feature_dim"] == 8 and info["default_method"] == "slda"
    assert client.get("/health").json() == {"status": "ok"}
    docs = client.get("/openapi.json").json()
    assert "BT.601" in docs["info"]["description"]
    assert {"/model/extract_features", "/model/update_weights", "/model/run_benchmark"} <= set(docs["paths"])


def test_extract_features_adapts_any_image_to_the_extractor(client, state):
    grey = np.random.default_rng(1).integers(0, 256, (28, 28))
    same = client.post("/model/extract_features", json={"images": [grey.tolist()]}).json()["features"]
    expected = state.extractor(torch.from_numpy(grey / 255.0).float()[None, None])
    np.testing.assert_allclose(same, expected, rtol=1e-5, atol=1e-6)
    # an RGB image with three equal channels is that grey image; size and int/float do not matter
    rgb = np.repeat(grey[:, :, None], 3, axis=2).astype(float)
    as_rgb = client.post("/model/extract_features", json={"images": [rgb.tolist()]}).json()["features"]
    np.testing.assert_allclose(as_rgb, same, rtol=1e-4, atol=1e-5)
    mixed = client.post("/model/extract_features", json={"images": [grey.tolist(), rgb_images(1, 40)[0]]})
    assert mixed.status_code == 200 and np.array(mixed.json()["features"]).shape == (2, 8)


def test_update_weights_learns_from_the_batch_and_uses_current_weights(client, state):
    x, y = state.features.train_x[:30].tolist(), state.features.train_y[:30].tolist()
    ridge = client.post("/model/update_weights", json={"features": x, "labels": y, "method": "ridge"}).json()
    W, b = heads.make_head("ridge", 8, 2).partial_fit(x, y).weights()
    np.testing.assert_allclose(ridge["updated_weights"][0], W, rtol=1e-9)
    np.testing.assert_allclose(ridge["updated_weights"][1], b, rtol=1e-9)
    start = [np.ones((2, 8)).tolist(), [0.0, 0.0]]
    moved = client.post("/model/update_weights", json={"features": x, "labels": y, "current_weights": start,
                                                       "method": "adam"}).json()["updated_weights"]
    assert 0 < np.abs(np.array(moved[0]) - 1).max() <= 1e-3 + 1e-9
    three = client.post("/model/update_weights", json={"features": x, "labels": y, "num_classes": 3}).json()
    assert np.array(three["updated_weights"][0]).shape == (3, 8)


def test_run_benchmark_compares_a_method_with_the_baseline(client, state):
    answer = client.post("/model/run_benchmark", json={"max_samples": 60, "evaluation_frequency": 3,
                                                       "batch_size": 2, "method": "ncm", "threshold": 0.5,
                                                       "window": 2}).json()
    crossings = [seen for seen in range(2, 61, 2) if seen // 3 > (seen - 2) // 3]  # batches of 2, every 3 samples
    assert answer["learning_curves"]["samples"] == crossings and crossings[:3] == [4, 6, 10]
    assert len(answer["learning_curves"]["custom_acc"]) == len(answer["learning_curves"]["samples"])
    curve, reached = se.run_method("ncm", state.features, se.Protocol(2, 60, 3, 0.5, 2), seed=0)
    assert answer["learning_curves"]["custom_acc"] == curve.accuracy and answer["custom_milestone"] == reached
    same = client.post("/model/run_benchmark", json={"max_samples": 40, "method": "adam"}).json()
    assert same["learning_curves"]["custom_acc"] == same["learning_curves"]["baseline_acc"]
    assert same["relative_efficiency"] in (None, 1.0)
    start = [np.zeros((2, 8)).tolist(), [0.0, 5.0]]  # always predicts class 1 until adam moves it
    custom = client.post("/model/run_benchmark", json={"max_samples": 5, "method": "adam",
                                                       "custom_weights": start}).json()
    majority = float(np.mean(state.features.val_y == 1))
    assert custom["learning_curves"]["custom_acc"][0] == pytest.approx(majority)


@pytest.mark.parametrize("path, body, field", [
    ("/model/update_weights", {"features": [[1.0, 2.0], [1.0]], "labels": [0, 1]}, "features"),
    ("/model/update_weights", {"features": [[1.0, 1e400]], "labels": [0]}, "features"),
    ("/model/update_weights", {"features": [[1.0, 2.0]], "labels": [2]}, "labels"),
    ("/model/update_weights", {"features": [[1.0, 2.0]], "labels": [-1]}, "labels"),
    ("/model/update_weights", {"features": [[1.0, 2.0]], "labels": [0], "current_weights": [[[1.0]], [0.0]]},
     "current_weights"),
    ("/model/update_weights", {"features": [[1.0, 2.0]], "labels": [0], "method": "sgd"}, "method"),
    ("/model/update_weights", {"features": [[1e300, 1e300]], "labels": [0], "method": "ridge"}, "features"),
    ("/model/run_benchmark", {"max_samples": 0}, "max_samples"),
    ("/model/run_benchmark", {"batch_size": 0}, "batch_size"),
    ("/model/run_benchmark", {"max_samples": POOL + 1}, "max_samples"),
    ("/model/run_benchmark", {"method": "sgd"}, "method"),
    ("/model/run_benchmark", {"custom_weights": [[[0.0] * 8], [0.0]]}, "custom_weights"),
    ("/model/extract_features", {"images": [[[0.0, 1.0], [0.0]]]}, "images"),
    ("/model/extract_features", {"images": [[[[0.0, 1.0]]]]}, "images"),
    ("/model/extract_features", {"images": [[[300.0]]]}, "images"),
    ("/model/extract_features", {"images": []}, "images"),
])
def test_bad_input_gets_a_4xx_naming_the_field(client, path, body, field):
    response = client.post(path, content=json.dumps(body).replace("1e400", "Infinity"),
                           headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    detail = response.json()["detail"]
    assert any(field in e["loc"] and e["msg"].startswith(field) for e in detail), detail


def test_requests_over_the_size_limit_get_413(state):
    small = TestClient(create_app(state=se_replace_limit(state, 1000)))
    response = small.post("/model/extract_features", json={"images": [np.zeros((40, 40)).tolist()]})
    assert response.status_code == 413 and "bytes" in response.json()["detail"]
    assert small.get("/health").status_code == 200


def se_replace_limit(state, limit):
    from dataclasses import replace
    return replace(state, settings=replace(state.settings, max_body_bytes=limit))


# ----------------------------------------------------------------------------- a real server

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(service_env, state):
    """uvicorn in its own process on a free loopback port (features already cached by ``state``)."""
    port = free_port()
    env = {**os.environ, **service_env, "TRANSFER_SERVICE_METHOD": "ridge", "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", "functions.efficiency.service:app", "--host", "127.0.0.1",
                                "--port", str(port)], env=env, cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
        assert process.poll() is None, process.stdout.read().decode()
    yield url
    process.terminate()
    process.wait(timeout=10)


def test_participant_client_flow_over_http(server):
    with httpx.Client(base_url=server, timeout=60) as http:
        features = http.post("/model/extract_features", json={"images": rgb_images()}).json()["features"]
        assert np.array(features).shape == (20, 8)
        labels = [i % 2 for i in range(20)]
        update = http.post("/model/update_weights", json={"features": features, "labels": labels,
                                                          "current_weights": None})
        W, b = update.json()["updated_weights"]
        assert np.array(W).shape == (2, 8) and len(b) == 2
        bench = http.post("/model/run_benchmark", json={"max_samples": 50})
        assert bench.status_code == 200
        answer = bench.json()
        assert set(answer) == {"custom_milestone", "baseline_milestone", "relative_efficiency", "learning_curves",
                               "final_accuracy"}
        assert answer["learning_curves"]["samples"] == list(range(1, 51))


def test_concurrent_benchmarks_answer_as_sequential_ones(server):
    bodies = [{"max_samples": 80, "seed": s, "method": m, "batch_size": 1 + s}
              for s, m in enumerate(["slda", "ridge", "logreg_refit", "adam", "ncm", "slda"])]
    with httpx.Client(base_url=server, timeout=120) as http:
        sequential = [http.post("/model/run_benchmark", json=b).json() for b in bodies]
        with ThreadPoolExecutor(len(bodies)) as pool:
            concurrent = list(pool.map(lambda b: http.post("/model/run_benchmark", json=b).json(), bodies))
    assert concurrent == sequential
    assert sequential[0] != sequential[-1]  # different seeds give different streams


def test_outside_method_plugs_into_the_benchmark(server, state):
    protocol = se.Protocol(batch_size=5, max_samples=40, evaluation_frequency=5)
    result = se.compare_to_baseline(state.features, "slda", protocol, seed=3, update_url=server)
    # the outside service (method ridge) learns from each batch starting at the head it sent back last
    weights, expected = None, []
    order = se.stream_order(3, POOL, 40)
    for start in range(0, 40, 5):
        index = order[start:start + 5]
        weights = heads.make_head("ridge", 8, 2, init=weights).partial_fit(
            state.features.train_x[index].astype(float), state.features.train_y[index]).weights()
        expected.append(heads.accuracy(weights, state.features.val_x.astype(float), state.features.val_y))
    np.testing.assert_allclose(result["learning_curves"]["custom_acc"], expected)


def test_study_with_an_outside_method_writes_results_and_figures(server, service_env, tmp_path):
    study = se.run_study("MNIST", task="binary", methods=("adam", "ncm"), seeds=2, max_samples=30,
                         evaluation_frequency=3, threshold=0.5, window=2, weights=service_env["TRANSFER_SERVICE_MODEL"],
                         pool=POOL, update_url=server, results_dir=tmp_path, progress=False, log=lambda *_: None)
    params, *records = json.loads(study.path.read_text())
    assert study.path.name == "sample_efficiency_regular_binary.json"
    assert params["batch_size"] == 1 and params["classes"] == [5, 6]
    assert sorted((r["method"], r["seed"]) for r in records) == sorted(
        (m, s) for m in ("adam", "ncm", "remote") for s in range(2))
    assert list(study.table.index) == ["adam", "ncm", "remote"]
    for figure in study.figures:
        assert Path(figure).stat().st_size > 1000


# ----------------------------------------------------------------------------- schema fuzzing

def test_schema_fuzz_gives_no_server_error(state):
    """Generated requests (valid and invalid) for every operation: never a 5xx, always the declared schema."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(state=state))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 5
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=10, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

        check()
