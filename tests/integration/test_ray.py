"""Sweeps on a real Ray cluster: one head started with `ray start` for the module (2 CPUs, dashboard off)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from functions.core.errors import DataError
from functions.notebooks.study import plan
from functions.runs.executors import Failure, InProcess, RayExecutor, make_executor
from functions.runs.sweep import run_sweep
from functions.core.paths import REPO_ROOT
from ray_token import RAY_TOKEN

pytestmark = pytest.mark.ray
RAY = Path(sys.executable).parent / "ray"
GRID = dict(percentages=[0.01], repeats=2, cut_points=[0, 2])
EXPECTED = {"results": 4, "baselines": 2}  # 2 cut points x 2 repeats, and 2 baselines


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head that requires a token, as the Ray how-to's recipe (docs/how-to/ray.md) starts one: the token is made here and
    given to the head, this process and the drivers it starts through the environment."""
    port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "token")
        patch.setenv("RAY_AUTH_TOKEN", RAY_TOKEN)
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        patch.setenv("RAY_worker_niceness", "0")  # as the Ray how-to's recipe: tasks not starved by the other tests
        subprocess.run([str(RAY), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                        "--disable-usage-stats", "--object-store-memory=300000000"], check=True, capture_output=True,
                       timeout=120)
        try:
            yield f"127.0.0.1:{port}"
        finally:
            subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=120)


def sweep(root: Path, executor, monkeypatch):
    monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(root))
    setup, cfg, grid = plan("MNIST_to_digits", None, "quick", "FR", GRID["percentages"], GRID["repeats"], GRID["cut_points"])
    return run_sweep(setup, cfg, grid, progress=False, executor=executor)


def runs_of(path: Path) -> list[dict]:
    return json.loads(path.read_text())[1:]


def without_seconds(records):
    return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in records),
                  key=lambda r: (r["sampled_cut_point"], r["repeat"]))


def test_the_ray_sweep_writes_what_the_in_process_one_writes(cluster, tmp_path, monkeypatch):
    local = sweep(tmp_path / "in-process", InProcess(), monkeypatch)
    executor = RayExecutor(cluster)
    try:
        remote = sweep(tmp_path / "ray", executor, monkeypatch)
    finally:
        executor.close()
    for kind in ("results", "baselines"):
        a, b = json.loads(local[kind].read_text()), json.loads(remote[kind].read_text())
        assert a[0] == b[0] and len(b) - 1 == EXPECTED[kind]
        assert without_seconds(a[1:]) == without_seconds(b[1:])  # whatever the completion order


class FailingCut(InProcess):
    """Runs cells in this process but reports those at cut 2 as failed, as a Ray task that raised."""

    def submit(self, work, unit, *args):
        if unit.cut_point == 2:
            self._done.append((unit, Failure(unit, "RuntimeError: out of memory")))
        else:
            super().submit(work, unit, *args)


def test_a_failed_cell_is_named_the_others_are_saved_and_a_rerun_trains_only_it(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"1 cell\(s\) failed.*cut 2, percentage 0.01, repeats \[0, 1\] "
                                        r"\(RuntimeError: out of memory\)"):
        sweep(tmp_path, FailingCut(), monkeypatch)
    results = tmp_path / "MNIST_to_digits" / "results" / "results_cross_FR.json"
    assert sorted(r["sampled_cut_point"] for r in runs_of(results)) == [0, 0]
    sweep(tmp_path, InProcess(), monkeypatch)
    assert sorted(r["sampled_cut_point"] for r in runs_of(results)) == [0, 0, 2, 2]


def test_bad_addresses_and_resources_are_refused_in_seconds(cluster):
    began, port = time.perf_counter(), free_port()
    with pytest.raises(DataError, match=rf"no Ray cluster answers at 127.0.0.1:{port}"):
        RayExecutor(f"127.0.0.1:{port}")
    assert time.perf_counter() - began < 10
    with pytest.raises(DataError, match="has no GPUs"):
        RayExecutor(cluster, task_gpus=0.25)
    with pytest.raises(DataError, match=r"--task-cpus 3 is more than the Ray cluster .* has \(2 CPUs\); lower --task-cpus"):
        RayExecutor(cluster, task_cpus=3)
    with pytest.raises(DataError, match="unknown executor 'dask'"):
        make_executor("dask")


def test_a_papermill_grid_runs_its_points_on_ray_workers(cluster, tmp_path):
    command = [sys.executable, "-m", "functions", "sweep", "MNIST_to_digits/truncation.ipynb", "--no-progress",
               "--grid", 'modes=[["FT"], ["XY"]]', "--param", "profile=quick", "--param", "percentages=[0.05]",
               "--param", "repeats=1", "--param", "cut_points=[6]", "--out", str(tmp_path), "--executor", "ray", "--address", cluster]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 passed, 1 failed" in done.stdout and "unknown mode 'XY'" in done.stdout
    params, *runs = json.loads((tmp_path / "modes=FT" / "MNIST_to_digits" / "results" / "results_cross_FT.json").read_text())
    assert params["truncate"] and [r["sampled_cut_point"] for r in runs] == [6]


def _dies_once(unit, marker):
    """A unit whose worker process is killed on its first attempt."""
    if not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return unit * 10


def _raises_for_two(unit):
    if unit == 2:
        raise ValueError("bad unit")
    return unit * 10


def test_a_unit_whose_worker_dies_is_retried_and_one_that_raises_is_reported(cluster, tmp_path):
    executor = RayExecutor(cluster, max_retries=2)
    import ray.cloudpickle
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    try:
        began = time.perf_counter()
        executor.submit(_dies_once, 7, str(tmp_path / "marker"))
        ((unit, value),) = list(executor.completed(wait=True))
        print(f"a killed worker cost {time.perf_counter() - began:.1f} s")
        assert (unit, value) == (7, 70) and (tmp_path / "marker").exists() and executor.retried == 1
        for unit in (1, 2, 3):
            executor.submit(_raises_for_two, unit)
        finished = dict(executor.completed(wait=True))
    finally:
        executor.close()
    assert finished[1] == 10 and finished[3] == 30
    assert isinstance(finished[2], Failure) and "ValueError: bad unit" in finished[2].error


def test_an_actor_holds_its_next_unit_and_losing_both_starts_one_replacement(cluster, tmp_path):
    executor = RayExecutor(cluster, task_cpus=2, max_retries=2)  # one slot: both units go to one actor
    import ray.cloudpickle
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        executor.submit(_dies_once, 7, str(tmp_path / "marker"))
        executor.submit(_raises_for_two, 8)
        finished = dict(executor.completed(wait=True))
        # the second unit was queued on the actor behind the first, so both were lost with it;
        # one actor (not one per unit) replaced it
        assert finished == {7: 70, 8: 80} and executor.retried == 2
        assert len(executor._held) + len(executor._starting) == 1
    finally:
        executor.close()


# last: the workers and drivers these tests kill leave the shared cluster busy for a while
def _restore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_a_driver_stopped_mid_sweep_resumes_with_nothing_lost_or_doubled(cluster, tmp_path, how):
    env = {**os.environ, "TRANSFER_OUTPUT_ROOT": str(tmp_path)}
    # 8x8 digits, the deepest cut points (only the layers after a frozen prefix train) and no
    # baselines: cells of a second, so the test's time goes to what it checks (stopping, restarting,
    # resuming)
    command = [sys.executable, "-m", "functions", "run", "MNIST_to_digits", "--percentages", "0.01", "0.05", "--repeats", "2",
               "--cuts", "3", "4", "5", "6", "--no-baselines", "--executor", "ray", "--address", cluster,
               "--no-progress"]
    results = tmp_path / "MNIST_to_digits" / "results" / "results_cross_FR.json"
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_restore_sigint)
    deadline = time.monotonic() + 240
    while not (results.exists() and runs_of(results)) and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.2)
    driver.send_signal(how)
    _, err = driver.communicate(timeout=120)
    if how == signal.SIGINT:
        assert driver.returncode == 130 and b"re-running the same command resumes" in err
    saved = len(runs_of(results))
    assert 0 < saved < 16
    finished = subprocess.run(command, env=env, capture_output=True, timeout=600)
    assert finished.returncode == 0, finished.stderr.decode()[-2000:]
    keys = [(r["sampled_percentage"], r["sampled_cut_point"], r["repeat"]) for r in runs_of(results)]
    assert sorted(keys) == [(p, c, r) for p in (0.01, 0.05) for c in range(3, 7) for r in range(2)]  # complete, once



def test_a_study_on_a_backbone_and_your_images_writes_on_ray_what_it_writes_in_process(cluster, paints, tmp_path,
                                                                                       monkeypatch):
    from functions.runs.backbone_study import CutStudy, CutStudySettings, grid
    settings = CutStudySettings(input_size=32, max_epochs=2, patience=2, min_steps_per_epoch=2, batch_size=4)
    sweep_grid = grid(per_class=(2,), cut_points=(5, 9), repeats=2)
    written = {}
    # one thread here, as on each one-CPU actor: oneDNN splits a convolution's sums by threads, and
    # on six test images one rounding apart can flip a prediction
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for where, executor in (("in-process", InProcess()), ("ray", RayExecutor(cluster))):
            monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(tmp_path / where))
            try:
                written[where] = CutStudy(paints, "F", settings, log=lambda *_: None).run(
                    sweep_grid, progress=False, executor=executor)
            finally:
                executor.close()
    finally:
        torch.set_num_threads(threads)
    for kind in ("results", "baselines"):
        local, remote = (json.loads(written[where][kind].read_text()) for where in ("in-process", "ray"))
        assert local[0] == remote[0] and len(remote) - 1 == (4 if kind == "results" else 2)
        assert without_seconds(local[1:]) == without_seconds(remote[1:])
