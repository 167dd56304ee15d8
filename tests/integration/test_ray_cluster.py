"""Grids on a Ray cluster of two nodes on this machine (``ray.cluster_utils.Cluster``, one CPU each,
a token required as on a real cluster): the fe-vs-ft grid and the zoo build spread over both nodes,
and a sweep that loses a node half-way finishes on the other."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from functions.notebooks.study import plan
from functions.runs.executors import InProcess, RayExecutor, make_executor
from functions.runs.sweep import run_sweep
from ray_token import RAY_TOKEN

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def nodes():
    """The two-node cluster of ``two_nodes.py`` with a token required, as the Ray how-to's recipe
    starts one: ``(address, remove)``, where ``remove()`` kills the second node."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": RAY_TOKEN, "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_worker_niceness": "0"}
    with pytest.MonkeyPatch.context() as patch:
        for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_USAGE_STATS_ENABLED", "RAY_worker_niceness"):
            patch.setenv(name, env[name])  # for the drivers these tests start
        process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("two_nodes.py"))], env=env,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            address = process.stdout.readline().strip()
            assert address, "the two-node cluster did not start"

            def remove() -> None:
                process.stdin.write("remove\n")
                process.stdin.flush()
                assert process.stdout.readline().strip() == "removed"

            yield address, remove
        finally:
            process.stdin.close()
            process.wait(timeout=120)


def runs_of(path) -> list[dict]:
    return json.loads(path.read_text())[1:]


def without_seconds(records):
    return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in records),
                  key=lambda r: (r["sampled_cut_point"], r["sampled_percentage"], r["repeat"]))


MEASURED = ("_seconds", "_energy_kwh", "_emissions_kg", "_peak_memory_mb")


def test_the_fe_vs_ft_grid_on_two_nodes_equals_the_in_process_one(nodes, tmp_path, monkeypatch):
    from functions.runs import fe_vs_ft
    settings = fe_vs_ft.FeVsFtSettings(backbone="study", max_epochs=3, patience=2)
    outcomes = {}
    for name in ("in-process", "ray"):
        monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(tmp_path / name))
        monkeypatch.setenv("TRANSFER_FEATURE_CACHE", str(tmp_path / name / "features"))
        executor = make_executor(name, nodes[0])
        try:
            if name == "ray":
                assert executor.slots == 2
            outcomes[name] = fe_vs_ft.run_study("MNIST", None, settings, [1, 3], 2, track=False, progress=False,
                                                log=lambda *_: None, executor=executor).records
        finally:
            executor.close()
    same = lambda records: sorted(({k: v for k, v in r.items() if not k.endswith(MEASURED)} for r in records),
                                  key=fe_vs_ft.run_key)
    assert len(outcomes["ray"]) == 8 and same(outcomes["ray"]) == same(outcomes["in-process"])
    assert all(r["total_energy_kwh"] >= 0 and r["evaluation_seconds"] > 0 for r in outcomes["ray"])


def test_the_model_zoo_matrix_on_two_nodes_equals_the_in_process_one(nodes):
    """One unit per model; records come back in the zoo's order whatever order they finish in."""
    from functions.analysis.model_zoo import matrix
    from functions.data.task_bank import bank
    from functions.runs import zoo_matrix
    from functions.models.zoo_catalog import zoo_model
    models = [zoo_model(n) for n in ("mnist_0-4_d6_w16", "fashion_all_d6_w16")]
    tasks = [t for t in bank() if t.n_train <= 60][:4]
    outcomes = {}
    for name in ("in-process", "ray"):
        executor = make_executor(name, nodes[0])
        try:
            outcomes[name], timing = zoo_matrix.build(models, tasks, matrix.scores, seeds=2, log=lambda *_: None,
                                                        executor=executor)
        finally:
            executor.close()
        assert set(timing.extraction_s) == {m.name for m in models}
    assert len(outcomes["ray"]) == 8 and list(outcomes["ray"]["model"]) == [models[0].name] * 4 + [models[1].name] * 4
    pd.testing.assert_frame_equal(outcomes["ray"], outcomes["in-process"])


def sweep(root, executor, monkeypatch, on_run=None):
    monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(root))
    # 8x8 digits at the deeper cut points: cells of about a second, 8 of them
    setup, cfg, grid = plan("MNIST_to_digits", None, "quick", "FR", [0.01, 0.05], 2, [3, 4, 5, 6])
    return run_sweep(setup, cfg, grid, baselines=False, progress=False, log=lambda *_: None, on_run=on_run,
                     executor=executor)


# last: it takes a node away from the module's cluster
def test_a_sweep_that_loses_a_node_finishes_on_the_other_with_nothing_lost_or_doubled(nodes, tmp_path, monkeypatch):
    address, remove = nodes
    expected = runs_of(sweep(tmp_path / "in-process", InProcess(), monkeypatch)["results"])
    executor = RayExecutor(address, max_retries=2)
    removed = []

    def remove_the_node_once(record):
        if not removed:  # after the first saved run: the other actor is busy, or gets its next cell now
            remove()
            removed.append(record)

    try:
        assert executor.slots == 2
        results = sweep(tmp_path / "ray", executor, monkeypatch, on_run=remove_the_node_once)["results"]
    finally:
        executor.close()
    assert removed and executor.retried >= 1  # a cell sent to the lost node's actor ran again elsewhere
    assert without_seconds(runs_of(results)) == without_seconds(expected) and len(expected) == 16
