"""The HTTP service: every endpoint, bad input, a real uvicorn process, concurrency, schema fuzzing
(in process and with the schemathesis command against the real process) and the offline docs pages."""
import json
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

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
from functions.efficiency.milestone import stream_order
from functions.config import Config, source_params
from functions.core.paths import REPO_ROOT
from functions.models.study_cnn import build
from functions.efficiency.service import ServiceSettings, create_app, load_state

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
    return load_state(ServiceSettings.from_env(), log=lambda *_: None)


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
    start = [np.zeros((2, 8)).tolist(), [0.0, 5.0]]  # always predicts class 1 until adam moves it
    custom = client.post("/model/run_benchmark", json={"max_samples": 5, "method": "adam",
                                                       "custom_weights": start}).json()
    majority = float(np.mean(state.features.val_y == 1))
    assert custom["learning_curves"]["custom_acc"][0] == pytest.approx(majority)


@pytest.fixture(scope="module")
def loud_client(state):
    """The service over the same task with its features scaled up a thousandfold: large enough for the
    adam baseline's small steps to reach the milestone within the pool."""
    from dataclasses import replace
    loud = replace(state.features, train_x=state.features.train_x * 1000, val_x=state.features.val_x * 1000)
    return TestClient(create_app(state=replace(state, features=loud))), loud


def test_run_benchmark_relative_efficiency_is_the_baseline_milestone_over_the_methods(loud_client):
    client, features = loud_client
    body = {"max_samples": POOL, "threshold": 0.6, "window": 2, "seed": 1}
    answer = client.post("/model/run_benchmark", json={**body, "method": "slda"}).json()
    custom, baseline = answer["custom_milestone"], answer["baseline_milestone"]
    assert isinstance(custom, int) and isinstance(baseline, int) and custom < baseline
    protocol = se.Protocol(1, POOL, 1, 0.6, 2)
    assert (custom, baseline) == (se.run_method("slda", features, protocol, seed=1)[1],
                                  se.run_method("adam", features, protocol, seed=1)[1])
    assert answer["relative_efficiency"] == baseline / custom > 1
    same = client.post("/model/run_benchmark", json={**body, "method": "adam"}).json()
    assert same["custom_milestone"] == same["baseline_milestone"] == baseline
    assert same["relative_efficiency"] == 1.0


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
    ("/model/extract_features", {"images": [[[True, 0.0]]]}, "images"),
    ("/model/extract_features", {"images": [[["7"]]]}, "images"),
    ("/model/update_weights", {"features": [[True]], "labels": [0]}, "features"),
    ("/model/update_weights", {"features": [[]], "labels": [0]}, "features"),
    ("/model/update_weights", {"features": [[2e6]], "labels": [0]}, "features"),
    ("/model/update_weights", {"features": [[1.0]], "labels": [True]}, "labels"),
    ("/model/update_weights", {"features": [[1.0]], "labels": [0], "num_classes": "3"}, "num_classes"),
    ("/model/update_weights", {"features": [[1.0]], "labels": [0], "current_weights": [[[False], [0.0]], [0.0, 0.0]]},
     "current_weights"),
    ("/model/run_benchmark", {"custom_weights": [[], []]}, "custom_weights"),
    ("/model/run_benchmark", {"batch_size": True}, "batch_size"),
    ("/model/run_benchmark", {"batch_size": 2.5}, "batch_size"),
])
def test_bad_input_gets_a_422_naming_the_field(client, path, body, field):
    response = client.post(path, content=json.dumps(body).replace("1e400", "Infinity"),
                           headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(field in e["loc"] and e["msg"].startswith(field) for e in detail), detail


def test_a_body_that_is_not_utf8_gets_a_422_as_bad_json_does(client):
    answers = [client.post("/model/update_weights", content=content, headers={"content-type": "application/json"})
               for content in (b"\xff{}", b"{")]
    assert [answer.status_code for answer in answers] == [422, 422]
    assert all(answer.json()["detail"][0]["loc"][0] == "body" for answer in answers)
    assert answers[0].json()["detail"][0]["msg"].startswith("body is not UTF-8")


def test_integers_may_be_written_with_a_point(client):
    body = {"max_samples": 20, "batch_size": 2, "seed": 3, "method": "ncm", "window": 2}
    as_ints = client.post("/model/run_benchmark", json=body).json()
    as_floats = client.post("/model/run_benchmark", json={k: float(v) if isinstance(v, int) else v
                                                          for k, v in body.items()})
    assert as_floats.status_code == 200 and as_floats.json() == as_ints


def test_schema_states_the_limits_of_the_loaded_task(client):
    body = client.get("/openapi.json").json()["components"]["schemas"]["BenchmarkRequest"]["properties"]
    assert body["max_samples"]["maximum"] == POOL
    W, b = next(s for s in body["custom_weights"]["anyOf"] if s.get("type") == "array")["prefixItems"]
    assert (W["minItems"], W["maxItems"], W["items"]["minItems"], W["items"]["maxItems"]) == (2, 2, 8, 8)
    assert (b["minItems"], b["maxItems"]) == (2, 2)
    at_the_limits = client.post("/model/run_benchmark", json={"max_samples": POOL, "evaluation_frequency": POOL,
                                                              "custom_weights": [np.zeros((2, 8)).tolist(), [0, 0]]})
    assert at_the_limits.status_code == 200, at_the_limits.text


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
def server(service_env, state, tmp_path_factory):
    """uvicorn in its own process on a free loopback port (features already cached by ``state``); its log
    goes to a file, which a pipe nobody reads would fill and so block the server."""
    port = free_port()
    env = {**os.environ, **service_env, "TRANSFER_SERVICE_METHOD": "ridge", "PYTHONPATH": str(REPO_ROOT)}
    log = tmp_path_factory.mktemp("server") / "uvicorn.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "uvicorn", "functions.efficiency.service:app", "--host",
                                    "127.0.0.1", "--port", str(port)], env=env, cwd=REPO_ROOT,
                                   stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
        assert process.poll() is None, log.read_text()
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
    order = stream_order(3, POOL, 40)
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


def agreeing(body: dict) -> dict:
    """A schema-valid body made to keep the rules that tie its values together (rows of one length, one
    label per row, each below num_classes, current_weights num_classes x d)."""
    if "images" in body:
        return {"images": [[(row * len(image[0]))[:len(image[0])] for row in image] for image in body["images"]]}
    rows, labels, classes = body["features"], body["labels"], int(body.get("num_classes", 2))
    n, d = min(len(rows), len(labels)), len(rows[0])
    agreed = {**body, "features": [(row * d)[:d] for row in rows[:n]], "labels": [y % classes for y in labels[:n]]}
    if body.get("current_weights"):
        W, b = body["current_weights"]
        agreed["current_weights"] = [[(W[c % len(W)] * d)[:d] for c in range(classes)],
                                     [b[c % len(b)] for c in range(classes)]]
    return agreed


@pytest.mark.parametrize("path", ["/model/extract_features", "/model/update_weights"])
def test_schema_valid_requests_that_keep_the_cross_field_rules_are_accepted(client, state, path):
    """What the schemathesis command below cannot check for these two operations: it allows their 422s."""
    operation = schemathesis.openapi.from_asgi("/openapi.json", create_app(state=state))[path]["POST"]

    @given(case=operation.as_strategy())
    @settings(max_examples=60, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def check(case):
        response = client.post(path, json=agreeing(case.body))
        assert response.status_code == 200, response.text

    check()


def test_schemathesis_finds_nothing_against_the_real_server(server, tmp_path):
    """Every check of the schemathesis command: statuses and bodies as documented, schema-valid requests
    accepted and schema-violating ones (booleans for numbers, bodies that are not JSON) rejected."""
    config = REPO_ROOT / "schemathesis.toml"  # the file users' runs from the repository root read
    run = subprocess.run([sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color", "run",
                          f"{server}/openapi.json", "--checks", "all", "--max-examples", "30", "--seed", "1",
                          "--generation-database", "none", "--request-timeout", "60"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "5 selected / 5 total" in run.stdout


# ----------------------------------------------------------------------------- offline docs

class PageLinks(HTMLParser):
    """What a page makes a browser load: src, href and spec-url attributes, and the paths its scripts name."""

    def __init__(self, page: str):
        super().__init__()
        self.links = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.links += [value for name, value in attrs if name in ("src", "href", "spec-url") and value]

    def handle_data(self, data):
        if self.lasttag == "script":
            self.links += re.findall(r"""["']((?:https?:)?//[^"']*|/[^"']*)["']""", data)


@pytest.fixture(params=["in process", "real process"])
def docs_client(request, client):
    if request.param == "in process":
        yield client
        return
    with httpx.Client(base_url=request.getfixturevalue("server"), timeout=60) as http:
        yield http


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_load_only_what_the_service_serves(docs_client, path):
    page = docs_client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    origin = urlsplit(str(page.url))[:2]
    links = PageLinks(page.text).links + re.findall(r"https?://[^\s\"'<>]+", page.text)
    assert any(link.endswith(".js") for link in links) and "/openapi.json" in links, links
    for link in links:
        url = urljoin(str(page.url), link)
        assert urlsplit(url)[:2] == origin, f"{path} loads {link} from another host"
        asset = docs_client.get(url)
        assert asset.status_code == 200 and asset.content, f"{path} loads {link}: {asset.status_code}"


def test_swagger_ui_renders_openapi_31_without_the_online_validator(client):
    page = client.get("/docs").text
    assert '"validatorUrl": null' in page  # Swagger UI's default validator is an outside host
    bundle = next(link for link in PageLinks(page).links if link.endswith(".js"))
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    assert b"isOAS31" in client.get(bundle).content  # Swagger UI 4 cannot render a 3.1 schema
