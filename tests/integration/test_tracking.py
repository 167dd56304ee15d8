"""MLflow tracking against real stores: a SQLite file and a real `mlflow server` process; bad
stores are refused fast with the path or URI in the message."""
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient

from functions.core.errors import DataError
from functions.runs.tracking import Tracker, default_uri

SERVER_START_TIMEOUT = 60
PARAMS = {"lr": 0.01, "cut": 3, "head": None, "percentages": [1, 10]}
METRICS = {"accuracy": 0.875, "loss": 0.42, "diverged": math.nan}
CURVES = {"train_loss": [2.0, 1.5, 1.25, 1.0]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    artifact = folder / "confusion.csv"
    artifact.write_text("0,1\n1,0\n")
    tracker = Tracker(f"sqlite:///{folder}/mlflow.db")
    run_id = tracker.log_run("cifar cuts", "cut-3", PARAMS, METRICS, curves=CURVES, artifacts=[artifact],
                             tags={"setup": "regular"})
    return tracker, run_id, folder


def check_run(client: MlflowClient, run_id: str) -> None:
    """Everything logged by :data:`PARAMS`, :data:`METRICS` and :data:`CURVES` reads back as given."""
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {key: str(value) for key, value in PARAMS.items()}
    assert run.data.metrics == {"accuracy": 0.875, "loss": 0.42, "train_loss": 1.0}
    history = client.get_metric_history(run_id, "train_loss")
    assert [(point.step, point.value) for point in history] == list(enumerate(CURVES["train_loss"]))


def test_sqlite_run_reads_back_through_the_tracker_and_a_fresh_client(store):
    tracker, run_id, folder = store
    table = tracker.runs("cifar cuts")
    assert table.shape[0] == 1
    row = table.iloc[0]
    assert (row["run_id"], row["run_name"], row["status"]) == (run_id, "cut-3", "FINISHED")
    assert row["params.head"] == "None" and row["params.percentages"] == "[1, 10]"
    assert row["metrics.accuracy"] == 0.875 and row["tags.setup"] == "regular"
    assert "metrics.diverged" not in table.columns

    client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
    check_run(client, run_id)
    assert [item.path for item in client.list_artifacts(run_id)] == ["confusion.csv"]
    experiment = client.get_experiment_by_name("cifar cuts")
    assert experiment.artifact_location == str(folder / "mlartifacts" / "cifar_cuts")
    assert (folder / "mlartifacts" / "cifar_cuts" / run_id / "artifacts" / "confusion.csv").read_text() == "0,1\n1,0\n"


def test_runs_of_one_experiment_accumulate(store):
    tracker, _, _ = store
    assert tracker.experiment_id("second") == tracker.experiment_id("second")
    for cut in (1, 2):
        tracker.log_run("second", f"cut-{cut}", {"cut": cut}, {"accuracy": cut / 10})
    table = tracker.runs("second").sort_values("run_name")
    assert list(table["params.cut"]) == ["1", "2"] and list(table["metrics.accuracy"]) == [0.1, 0.2]


def test_an_experiment_deleted_in_the_ui_is_restored_for_new_runs(store):
    tracker, _, folder = store
    first = tracker.log_run("deleted", "before", {}, {"accuracy": 0.5})
    tracker.client.delete_experiment(tracker.experiment_id("deleted"))
    again = Tracker(f"sqlite:///{folder}/mlflow.db")
    second = again.log_run("deleted", "after", {}, {"accuracy": 0.6})
    assert set(again.runs("deleted")["run_id"]) == {first, second}


def test_bad_input_is_refused_before_a_run_is_created(store, tmp_path):
    tracker, _, _ = store
    with pytest.raises(DataError, match="'accuracy' is 'high', not a number"):
        tracker.log_run("refused", "r", {}, {"accuracy": "high"})
    with pytest.raises(DataError, match="missing.png"):
        tracker.log_run("refused", "r", {}, {}, artifacts=[tmp_path / "missing.png"])
    assert tracker.client.search_runs([tracker.experiment_id("refused")]) == []


def test_runs_of_an_unknown_experiment_name_the_known_ones(store):
    tracker, _, _ = store
    with pytest.raises(DataError, match="no experiment 'cifar cutz'.*cifar cuts"):
        tracker.runs("cifar cutz")


def test_a_new_sqlite_store_is_created_quietly(tmp_path, capfd):
    Tracker(f"sqlite:///{tmp_path}/deep/folder/mlflow.db").experiment_id("quiet")
    assert (tmp_path / "deep" / "folder" / "mlflow.db").is_file()
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_default_uri_is_an_absolute_sqlite_file_in_the_output_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(tmp_path))
    assert default_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert default_uri().startswith("sqlite:////")
    assert default_uri(tmp_path / "elsewhere") == f"sqlite:///{tmp_path.resolve()}/elsewhere/mlflow.db"


def test_mlflow_tracking_uri_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert default_uri() == default_uri(tmp_path) == "http://127.0.0.1:5999"


def test_a_store_under_a_regular_file_is_refused_naming_the_path(tmp_path):
    blocker = tmp_path / "results.json"
    blocker.write_text("[]")
    db = blocker / "runs" / "mlflow.db"
    with pytest.raises(DataError, match="TRANSFER_OUTPUT_ROOT") as refused:
        Tracker(f"sqlite:///{db}")
    assert str(db) in str(refused.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"] and blocker.read_text() == "[]"


def test_an_unreachable_server_is_refused_within_seconds(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(DataError) as refused:
        Tracker(uri)
    assert time.monotonic() - start < 5
    assert uri in str(refused.value)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's whole process group (it starts uvicorn as a child); SIGKILL if slow."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_runs_logged_over_http_to_a_real_mlflow_server(tmp_path, monkeypatch):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    # the client's retry knobs that Tracker sets for HTTP stores are restored after the test
    for knob in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(knob, os.environ.get(knob, "2"))
    # the server's background job runners are not what is tested; off, they spare two cores
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [str(Path(sys.executable).parent / "mlflow"), "server",
               "--backend-store-uri", f"sqlite:///{tmp_path}/srv.db", "--default-artifact-root", str(tmp_path / "art"),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            assert process.poll() is None, f"server exited with {process.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"no /health after {SERVER_START_TIMEOUT} s:\n{log_path.read_text()}"
            try:
                if httpx.get(f"{uri}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        artifact = tmp_path / "notes.txt"
        artifact.write_text("served")
        tracker = Tracker(uri)
        run_id = tracker.log_run("served", "cut-3", PARAMS, METRICS, curves=CURVES, artifacts=[artifact])
        check_run(MlflowClient(tracking_uri=uri), run_id)
        assert list(tracker.runs("served")["run_id"]) == [run_id]
        assert [item.path for item in tracker.client.list_artifacts(run_id)] == ["notes.txt"]
    finally:
        stop(process)


def test_drivers_opening_one_new_store_at_once_all_succeed(tmp_path):
    """Notebooks run side by side (nbval with two workers) share the output root's store."""
    script = ("import sys\nfrom functions.runs.tracking import Tracker\n"
              "print(Tracker(sys.argv[1]).experiment_id('Fine-tuning'))")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    drivers = [subprocess.Popen([sys.executable, "-c", script, uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(3)]
    outcomes = [d.communicate(timeout=120) for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0, 0], [err[-500:] for _, err in outcomes]
    assert len({out.strip() for out, _ in outcomes}) == 1  # one experiment, not three
