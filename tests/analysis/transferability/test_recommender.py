"""FLOPs, transferability records, the leave-one-setup-out recommender and the recommend command."""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from functions.config import Config, get_setup
from functions.core.errors import DataError
from functions.analysis.transferability import build_records, forward_flops, leep, nce, recommender_eval, save_records
from score_references import hand_made_records, rng


def test_forward_flops_count_conv_and_linear_multiply_adds(tiny_model):
    # convs 1->8 and 8->8 at 28x28, pool, 8->8 at 14x14, then a linear layer 8*14*14 -> 5
    expected = 2 * (9 * 8 * 784 + 8 * 9 * 8 * 784 + 8 * 9 * 8 * 196 + 1568 * 5)
    assert forward_flops(tiny_model) == expected
    with FlopCounterMode(display=False) as counter:
        tiny_model(torch.zeros(1, 1, 28, 28))
    assert counter.get_total_flops() == expected


SETUPS_OF_RECORDS = [("MNIST", "regular"), ("FashionMNIST", "regular"), ("MNIST_to_FashionMNIST", "cross")]


def three_setups_records(model) -> list:
    """Records of three setups whose logme_flat follows the accuracy and whose hscore_gap is noise."""
    cfg = Config(num_channels=8, depth=3)
    frames = []
    for i, (folder, name) in enumerate(SETUPS_OF_RECORDS):
        accuracy = {0.01: [0.5 + 0.05 * c + 0.01 * i for c in range(4)],
                    0.1: [0.9 - 0.04 * c - 0.01 * i for c in range(4)]}
        scores = {p: pd.DataFrame({"cut_point": range(4), "logme_flat": np.array(acc) * 2 - 1,
                                   "hscore_gap": rng(i).standard_normal(4)}) for p, acc in accuracy.items()}
        frames.append(build_records(scores, hand_made_records(accuracy), setup=get_setup(folder, name), cfg=cfg,
                                    model=model, n_target_train=27000, source_test_acc=0.98))
    return frames


def test_recommend_command_collects_every_folders_records(tiny_model, tmp_path):
    for (folder, name), frame in zip(SETUPS_OF_RECORDS, three_setups_records(tiny_model)):
        save_records(frame, tmp_path / "root" / folder / "results" / f"transferability_records_{name}_FR.csv")
    done = subprocess.run([sys.executable, "-m", "functions", "recommend", "--out", str(tmp_path / "out")],
                          env={**os.environ, "TRANSFER_OUTPUT_ROOT": str(tmp_path / "root")},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "24 records of 3 setups" in done.stdout
    assert len(pd.read_csv(tmp_path / "out" / "transferability_records.csv")) == 24
    summary = json.loads((tmp_path / "out" / "transferability_recommender.json").read_text())
    methods = {m["method"]: m for m in summary["methods"]}
    assert methods["logme_flat"]["kendall_tau"] == pytest.approx(1.0) and methods["hscore_gap"]["mae"] is None
    assert summary["setups"] == sorted(f"{f}/{n}" for f, n in SETUPS_OF_RECORDS)
    lines = done.stdout.splitlines()
    header = lines[1].split()
    printed = {row[0]: dict(zip(header, row)) for row in (line.split() for line in lines[2:2 + len(methods)])}
    assert set(printed) == set(methods) and header[:2] == ["method", "kind"]
    for name, method in methods.items():  # the printed table rounds to 3 decimals, the file to 6
        assert printed[name]["kind"] == method["kind"]
        for column in header[2:]:
            value, cell = method[column], printed[name][column]
            if value is None:
                assert cell == "NaN", (name, column)
            else:
                assert float(cell) == pytest.approx(value, abs=5e-4 + 1e-9), (name, column)


def test_recommend_command_without_records_says_what_to_run(tmp_path):
    done = subprocess.run([sys.executable, "-m", "functions", "recommend", "--out", str(tmp_path)],
                          env={**os.environ, "TRANSFER_OUTPUT_ROOT": str(tmp_path)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "transferability notebooks" in done.stderr


def test_records_and_leave_one_setup_out_recommender(tiny_model, tmp_path):
    frames = three_setups_records(tiny_model)
    records = pd.concat(frames, ignore_index=True)
    assert len(records) == 3 * 2 * 4
    assert set(records["domain"]) == {"same-dataset", "cross-dataset"}
    assert (records["flops"] == forward_flops(tiny_model)).all() and (records["runs"] == 2).all()
    assert records.loc[0, "n_train"] == pytest.approx(270)
    save_records(records, tmp_path / "records.csv")
    assert len(pd.read_csv(tmp_path / "records.csv")) == len(records)
    summary = recommender_eval(records).set_index("method")
    assert summary.loc["logme_flat", "kendall_tau"] == pytest.approx(1.0)
    assert summary.loc["logme_flat", "top1_rate"] == pytest.approx(1.0)
    assert np.isfinite(summary.loc["recommender", ["mae", "rmse", "kendall_tau"]].astype(float)).all()
    assert "logme_flat" in summary.attrs["features"]
    with pytest.raises(DataError, match="two setups"):
        recommender_eval(frames[0])


def linear_records(offset: float) -> pd.DataFrame:
    """Three setups of one architecture, one percentage and cut points 0-3, whose logme_flat takes the
    same four values in each: accuracy is 0.5 + 0.1 * logme_flat in the first two setups and
    ``offset`` more in the third."""
    setups = ["MNIST/regular", "FashionMNIST/regular", "CIFAR/regular"]
    score = [-1.0, -0.5, 0.0, 0.5]
    rows = [{"setup": setup, "mode": "FR", "percentage": 0.01, "n_train": 270, "cut_point": cut,
             "logme_flat": score[cut], "test_acc": 0.5 + 0.1 * score[cut] + (offset if i == 2 else 0.0),
             "depth": 3, "num_channels": 8, "kernel_size": 3, "params": 9000, "flops": 2_000_000,
             "source_test_acc": 0.98, "domain": "same-dataset", "n_target_train": 27000}
            for i, setup in enumerate(setups) for cut in range(4)]
    return pd.DataFrame(rows)


def test_recommender_predicts_each_setup_from_the_other_setups_only():
    """A linear model with an intercept, fitted on setups that share the held-out setup's feature
    values, predicts on average the training setups' mean accuracy, whatever its penalty.  Held out,
    the third setup is then predicted d too low on average, and each of the first two d/2 too high
    (the mean of the other one and the third).  The errors within a setup keep one sign here, so the
    mean absolute error over the 12 rows is (4 d + 8 d/2) / 12 = 2d/3; a fit that also saw the held-out
    setup would be off by d/3 and 2d/3 instead: 4d/9."""
    d = 0.3
    summary = recommender_eval(linear_records(d)).set_index("method")
    assert {"logme_flat", "cut_point"} <= set(summary.attrs["features"])
    assert summary.loc["recommender", "mae"] == pytest.approx(2 * d / 3, abs=1e-9)
    assert summary.loc["recommender", "rmse"] >= summary.loc["recommender", "mae"]
    assert summary.loc["recommender", "kendall_tau"] == pytest.approx(1.0)
    assert summary.loc["recommender", "groups"] == 3
    # without the offset every held-out setup lies on the line of the others
    assert recommender_eval(linear_records(0.0)).set_index("method").loc["recommender", "mae"] < 1e-3


def test_verdict_names_the_best_ranking_score_and_whether_it_found_the_best_cut():
    from functions.notebooks.study import transferability_verdict
    validation = pd.DataFrame({
        "percentage": [0.01, 0.01, 0.01, 0.05], "score": ["logme_flat", "hscore_flat", "leep", "logme_flat"],
        "kendall_tau": [0.4, 0.6, np.nan, 0.7], "score_top_cut": pd.array([5, pd.NA, pd.NA, 2], dtype="Int64"),
        "best_cut": [4, 4, 4, 3], "top_cut_ok": [True, False, False, False]})
    lines = transferability_verdict(validation).splitlines()
    assert lines[0].startswith("0.01 of the data: hscore_flat ranks the cut points best (Kendall tau 0.60)")
    assert "ties several cut points" in lines[0] and "1 of 2 scores" in lines[0]
    assert "its top cut 2 missed the measured best cut 3" in lines[1]


def test_source_head_scores_name_their_source_argument_and_skip_unpredicted_source_classes():
    y = np.array([0, 0, 1, 1])
    with pytest.raises(DataError, match=r"^source_probs must be 2-D"):
        leep(np.full(4, 0.5), y)
    with pytest.raises(DataError, match=r"^source_probs rows must be probabilities \(non-negative, summing to 1\); "
                                        r"apply softmax to the source head's logits$"):
        leep(np.full((4, 2), 0.6), y)
    with pytest.raises(DataError, match=r"^source_labels must be 1-D"):
        nce(np.zeros((4, 1), dtype=int), y)
    probs = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.2, 0.8, 0.0], [0.1, 0.9, 0.0]])
    assert leep(probs, y) == pytest.approx(leep(probs[:, :2], y), abs=1e-15)  # source class 2: never predicted
    assert np.isfinite(leep(probs[:, :2] * (1 + 5e-4), y))  # rows summing to 1 within 1e-3 are probabilities
