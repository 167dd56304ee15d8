"""The results store on its own: file names, reading, refusing other parameters, resuming."""
import json

import pytest

from functions.core import atomic
from functions.core.errors import DataError
from functions.runs import store


@pytest.mark.parametrize("content, message", [("[{\"a\": 1}, ", "not valid JSON"), ("{}", "not a results file")])
def test_corrupt_results_file(tmp_path, content, message):
    path = tmp_path / "results_x_FR.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        store.load_results(path)


def test_results_paths_name_the_kind_setup_and_mode(output_root):
    assert store.results_path("MNIST", "baselines", "regular") == output_root / "MNIST/results/baselines_regular.json"
    assert store.results_path("MNIST", "results", "random", "FT") == output_root / "MNIST/results/results_random_FT.json"


@pytest.mark.parametrize("content", ["[]", "[1, 2]", "{\"a\": 1}"])
def test_a_json_file_that_is_not_a_results_list_is_refused(tmp_path, content):
    path = tmp_path / "results_x_FR.json"
    path.write_text(content)
    with pytest.raises(DataError) as raised:
        store.load_results(path)
    assert str(raised.value) == f"{path} is not a results file: expected a JSON list starting with a parameters dict"


def test_corrupt_json_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "results_x_FR.json"
    path.write_text("[{")
    with pytest.raises(DataError, match=r"is not valid JSON \(.*\); it is corrupt: restore it or delete it to re-run"):
        store.load_results(path)


def test_differing_keys_fill_legacy_values_and_ignore_the_schema_version():
    found = {"schema_version": 1, "lr": 0.1, "old": 3}
    wanted = {"schema_version": 2, "lr": 0.1, "new": True, "gone": None}
    assert store.differing_keys(found, wanted) == ["new", "old"]
    assert store.differing_keys(found, wanted, legacy={"new": True, "old": 4}) == ["old"]
    assert store.differing_keys(found, wanted, legacy={"new": False}) == ["new", "old"]
    assert store.differing_keys({"b": 1, "a": 1}, {"b": 2, "a": 2}) == ["a", "b"]
    # a legacy value stands in only for keys asked for now
    assert store.differing_keys({}, {"a": 1}, legacy={"a": 1, "b": 2}) == []


def test_refusal_names_each_key_with_both_values(tmp_path):
    with pytest.raises(DataError) as raised:
        store.refuse_other_parameters(tmp_path / "f.json", {"lr": 0.1, "depth": 6}, {"lr": 0.2, "depth": 6, "x": 1},
                                      legacy={"x": 2})
    assert str(raised.value) == (f"{tmp_path / 'f.json'} was written with different parameters (lr: file 0.1 vs now "
                                 "0.2, x: file 2 vs now 1); move it away or run with the same parameters to resume")
    store.refuse_other_parameters(tmp_path / "f.json", {"lr": 0.1}, {"lr": 0.1, "x": 2}, legacy={"x": 2})


def test_sweep_key_is_percentage_cut_and_repeat():
    key = store.sweep_key({"sampled_percentage": 0.1 + 0.2, "sampled_cut_point": 3.0, "repeat": "2", "test_acc": 0.5})
    assert key == store.sweep_key({"sampled_percentage": 0.3, "sampled_cut_point": 3, "repeat": 2})
    assert [type(part) for part in key[1:]] == [int, int]


def test_results_file_resumes_and_writes_every_call_whole(tmp_path):
    path = tmp_path / "nested" / "results_x_FR.json"
    params = {"schema_version": 2, "lr": 0.1}
    first = store.ResultsFile(path, params)
    assert first.done() == set() and not path.exists() and first.path == path
    runs = [{"sampled_percentage": 0.01, "sampled_cut_point": c, "repeat": 0, "test_acc": 0.5} for c in (0, 1)]
    first.add(*runs)
    assert json.loads(path.read_text()) == [params, *runs]
    first.add({"sampled_percentage": 0.01, "sampled_cut_point": 2, "repeat": 1})
    again = store.ResultsFile(path, params)
    assert again.done() == {(0.01, 0, 0), (0.01, 1, 0), (0.01, 2, 1)} and again.records == first.records
    by_name = store.ResultsFile(tmp_path / "other.json", {}, key=lambda r: r["name"])
    by_name.add({"name": "a"}, {"name": "b"})
    assert by_name.done() == {"a", "b"}


def test_a_legacy_file_resumes_and_is_stored_with_the_current_parameters(tmp_path):
    path = tmp_path / "results_x_FR.json"
    atomic.write_json_atomic(path, [{"lr": 0.1}, {"sampled_percentage": 0.5, "sampled_cut_point": 0, "repeat": 0}])
    now = {"schema_version": 2, "lr": 0.1, "reinit": True}
    with pytest.raises(DataError) as raised:
        store.ResultsFile(path, now)
    assert str(raised.value).startswith(f"{path} was written with different parameters (reinit: file None vs now True)")
    resumed = store.ResultsFile(path, now, legacy={"reinit": True})
    assert resumed.done() == {(0.5, 0, 0)}
    resumed.add({"sampled_percentage": 0.5, "sampled_cut_point": 1, "repeat": 0})
    assert store.load_results(path)[0] == now
