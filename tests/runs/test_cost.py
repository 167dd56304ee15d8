"""What a run costs: FLOPs counted exactly, and phases measured by a real codecarbon tracker,
offline, quietly, many times per process and in two processes at once."""
import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from functions.core.errors import DataError
from functions.runs.cost import CostMeter, count_flops, fine_tuning_flops, fine_tuning_passes

RECORD_KEYS = {"seconds", "peak_memory_mb", "energy_kwh", "emissions_kg", "flops"}


@pytest.fixture(scope="module")
def meter():
    handler = signal.getsignal(signal.SIGINT)
    with CostMeter() as cost:
        assert signal.getsignal(signal.SIGINT) is handler  # codecarbon's lock would replace it
        yield cost


def busy(seconds: float) -> None:
    x = torch.randn(128, 128)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        x = torch.tanh(x @ x)


def test_flops_of_a_linear_layer_are_counted_exactly():
    layer, batch = nn.Linear(10, 20), torch.randn(4, 10)
    assert count_flops(layer, batch) == 2 * 4 * 10 * 20


def test_flops_of_forward_and_backward_in_one_call():
    layer, batch = nn.Linear(10, 20), torch.randn(4, 10)
    # the input needs no gradient: backward adds only the weight's gradient, one more product
    assert count_flops(lambda: layer(batch).sum().backward()) == 2 * (2 * 4 * 10 * 20)


def test_flops_of_convolutions_match_the_hand_count():
    conv, images = nn.Conv2d(3, 8, 3, padding=1), torch.randn(2, 3, 16, 16)
    # 2 per multiply-add: batch x out channels x output pixels x in channels x kernel
    assert count_flops(conv, images) == 2 * 2 * 8 * (16 * 16) * 3 * (3 * 3)
    grouped, images = nn.Conv2d(4, 8, 3, stride=2, groups=2, bias=False), torch.randn(1, 4, 9, 9)
    assert count_flops(grouped, images) == 2 * 1 * 8 * (4 * 4) * (4 // 2) * (3 * 3)


def test_fine_tuning_is_charged_each_pass_as_counted_on_one_image():
    from functions.config import get_setup
    from functions.runs.pretrained import source_backbone
    from functions.train.finetune import FineTuneNet
    backbone = source_backbone(get_setup("MNIST", "regular"), log=lambda *_: None)
    net = FineTuneNet(backbone, 3, frozen=4, pooling="flatten")
    prefix, forward, step = fine_tuning_passes(backbone, net)
    assert prefix > 0 and step > forward > 0  # a step adds the backward pass to the forward one
    assert fine_tuning_flops((prefix, forward, step), 20, 10, 3) == \
        prefix * 30 + step * 20 * 3 + forward * (10 * 3 + 20)
    # passes repeated within an epoch (a step floor) are charged as training steps
    assert fine_tuning_flops((prefix, forward, step), 20, 10, 3, passes_per_epoch=4) - \
        fine_tuning_flops((prefix, forward, step), 20, 10, 3) == step * 20 * 3 * 3


def test_a_phase_records_time_memory_energy_and_flops(meter):
    layer, batch = nn.Linear(256, 256), torch.randn(64, 256)
    with meter.phase("train") as phase:
        busy(0.05)
        phase.flops = count_flops(layer, batch)
    record = phase.record()
    assert set(record) >= {f"train_{key}" for key in RECORD_KEYS}
    assert record["train_seconds"] >= 0.05
    assert record["train_peak_memory_mb"] > 0
    assert record["train_energy_kwh"] > 0 and record["train_emissions_kg"] > 0
    assert record["train_flops"] == 2 * 64 * 256 * 256


def test_the_energy_source_says_whether_the_cpu_share_is_estimated(meter):
    assert isinstance(meter.estimated, bool) and "RAM" in meter.energy_source
    assert ("CPU estimated from its TDP" in meter.energy_source) == meter.estimated


def test_peak_memory_sees_an_allocation_freed_inside_the_phase(meter):
    with meter.phase("baseline") as before:
        time.sleep(0.03)
    with meter.phase("allocate") as during:
        block = torch.ones(50 * 2 ** 20)  # 200 MB, written, so resident
        time.sleep(0.05)
        del block
    grown = during.record()["allocate_peak_memory_mb"] - before.record()["baseline_peak_memory_mb"]
    assert grown > 150


def test_sequential_phases_are_measured_separately_and_cheaply(meter):
    with meter.phase("extract") as first:
        busy(0.05)
    with meter.phase("fit") as second:
        time.sleep(0.01)
    assert first.record()["extract_seconds"] > second.record()["fit_seconds"]
    assert first.record()["extract_energy_kwh"] > second.record()["fit_energy_kwh"] > 0
    start = time.perf_counter()
    records = []
    for _ in range(200):
        with meter.phase("step") as phase:
            pass
        records.append(phase.record())
    assert time.perf_counter() - start < 5
    assert all(r["step_energy_kwh"] is not None and r["step_seconds"] >= 0 for r in records)


def test_misuse_is_refused(meter):
    with meter.phase("outer") as outer:
        with pytest.raises(DataError, match="has not ended"):
            outer.record()
        with pytest.raises(DataError, match="inside phase 'outer'"):
            with meter.phase("inner"):
                pass
    assert outer.record()["outer_seconds"] >= 0
    with pytest.raises(DataError, match="ISO code"):
        CostMeter(country_iso_code="XX")


def test_a_stopped_meter_measures_nothing():
    cost = CostMeter()
    cost.stop()
    with pytest.raises(DataError, match="stopped"):
        with cost.phase("late"):
            pass


def test_a_tracker_that_codecarbon_fails_to_start_is_reported(monkeypatch):
    monkeypatch.setenv("CODECARBON_TRACKING_MODE", "everything")  # codecarbon asserts machine|process
    with pytest.raises(DataError, match="failed to start .*CODECARBON_"):
        CostMeter()


# Each child blocks every socket before importing anything, measures one phase and prints it.
OFFLINE_CHILD = """
import json, socket
def refuse(*args, **kwargs):
    raise OSError("network used")
socket.socket.connect = socket.socket.connect_ex = socket.create_connection = socket.getaddrinfo = refuse
from functions.runs.cost import CostMeter
with CostMeter() as meter, meter.phase("offline") as phase:
    sum(i * i for i in range(100_000))
print(json.dumps({**phase.record(), "source": meter.energy_source}))
"""


def test_two_processes_measure_at_once_offline_quietly_writing_nothing(tmp_path):
    folders = [tmp_path / "a", tmp_path / "b"]
    children = []
    for folder in folders:
        folder.mkdir()
        children.append(subprocess.Popen([sys.executable, "-c", OFFLINE_CHILD], cwd=folder,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for child, folder in zip(children, folders):
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert err == ""
        record = json.loads(out)
        assert record["offline_energy_kwh"] > 0 and record["offline_emissions_kg"] > 0
        assert list(folder.iterdir()) == []
