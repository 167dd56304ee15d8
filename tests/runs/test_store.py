"""The results store on its own: file names, reading, refusing other parameters, resuming, merging
and salvaging."""
import json
import re

import pytest

from functions.__main__ import main
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
    with pytest.raises(DataError, match=rf"is not valid JSON \(.*\); it is corrupt: `python -m functions salvage "
                                        rf"{path}` keeps its readable runs"):
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


def test_a_second_writer_merges_instead_of_overwriting(tmp_path):
    path = tmp_path / "results_x_FR.json"
    params = {"lr": 0.1}
    first, second = store.ResultsFile(path, params), store.ResultsFile(path, params)
    run = lambda cut, acc=0.5: {"sampled_percentage": 0.01, "sampled_cut_point": cut, "repeat": 0, "test_acc": acc}
    records = first.records
    assert first.add(run(0), run(0, 0.9)) == [run(0)]  # one run per key, even within a call
    assert second.done() == {(0.01, 0, 0)}  # what is on disk, not what this object wrote
    assert second.add(run(1), run(0, 0.7)) == [run(1)]  # the run on disk stays
    first.add(run(2))
    assert store.load_results(path)[1] == [run(0), run(1), run(2)] == first.records == records


def test_a_file_rewritten_with_other_parameters_is_refused_at_the_next_write(tmp_path):
    path = tmp_path / "results_x_FR.json"
    mine = store.ResultsFile(path, {"lr": 0.1})
    atomic.write_json_atomic(path, [{"lr": 0.2}])
    with pytest.raises(DataError, match="lr: file 0.2 vs now 0.1"):
        mine.add({"sampled_percentage": 0.01, "sampled_cut_point": 0, "repeat": 0})
    assert store.load_results(path) == ({"lr": 0.2}, [])


def _runs(n):
    return [{"sampled_percentage": 0.01, "sampled_cut_point": c, "repeat": 0, "test_acc": 0.5, "curve": [0.1, 0.2],
             "extra": {"note": "nested"}} for c in range(n)]


def test_salvage_keeps_every_run_before_a_cut(tmp_path):
    path = tmp_path / "results_x_FR.json"
    params, runs = {"lr": 0.1, "classes": [5, 6]}, _runs(6)
    atomic.write_json_atomic(path, [params, *runs])
    whole = path.read_bytes()
    closes = [m.end() for m in re.finditer(rb"\n \}", whole)]  # where the parameters and each run end
    for cut in (len(whole) - 2, closes[1] - 1, closes[1], closes[3] + 1, closes[4] - 40, closes[6] - 1):
        path.write_bytes(whole[:cut])
        kept, unread, copy = store.salvage(path)
        complete = sum(end <= cut for end in closes[1:])
        assert store.load_results(path) == (params, runs[:complete]) and kept == complete
        assert copy == tmp_path / "results_x_FR.json.damaged" and copy.read_bytes() == whole[:cut]
        assert unread == len(whole[closes[complete]:cut].lstrip(b",\n ").rstrip())
        copy.unlink()


def test_salvage_skips_a_garbled_run_in_the_middle_and_keeps_the_ones_after_it(tmp_path, capsys):
    path = tmp_path / "results_x_FR.json"
    runs = _runs(4)
    atomic.write_json_atomic(path, [{"lr": 0.1}, *runs])
    text = path.read_text()
    path.write_text(text.replace('"sampled_cut_point": 1', '"sampled_cut_point: 1', 1))
    assert main(["salvage", str(path)]) == 0
    assert store.load_results(path)[1] == [runs[0], runs[2], runs[3]]
    out = capsys.readouterr().out
    assert f"kept the parameters and 3 runs of {path};" in out and "bytes could not be read" in out
    assert main(["salvage", str(path)]) == 0  # now whole: left as it is, no second copy
    assert "reads whole (3 runs): nothing to salvage" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir() if "damaged" in p.name) == ["results_x_FR.json.damaged"]


@pytest.mark.parametrize("content", ["", "[", "[{\"lr\": 0.", "{\"lr\": 0.1}"])
def test_salvage_refuses_a_file_whose_parameters_cannot_be_read(tmp_path, capsys, content):
    path = tmp_path / "results_x_FR.json"
    path.write_text(content)
    assert main(["salvage", str(path)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: cannot salvage {path}: its parameters (the list's first "
                                               f"element) cannot be read; restore it from a copy or delete it")
    assert path.read_text() == content and not (tmp_path / "results_x_FR.json.damaged").exists()
