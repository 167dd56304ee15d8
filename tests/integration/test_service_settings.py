"""The service checks its settings when it starts, as users start it (uvicorn in its own process):
a bad one stops it with one line naming the variable, no traceback, and nothing written."""
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from functions.core.errors import DataError
from functions.efficiency.service import ServiceSettings
from functions.core.paths import REPO_ROOT



def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("variable, value, message", [
    ("TASK", "foo", r"TRANSFER_SERVICE_TASK='foo' is unknown; choose one of \['all', 'binary'\]"),
    ("CUT", "99", r"TRANSFER_SERVICE_CUT: cut 99 is outside 0..6"),
    ("POOL", "-1", r"TRANSFER_SERVICE_POOL=-1 must be at least 1"),
    ("MODEL", "{garbage}", r"TRANSFER_SERVICE_MODEL .*garbage.pt is not a source model file"),
    ("INPUT_SIZE", "abc", r"TRANSFER_SERVICE_INPUT_SIZE='abc' is not an integer"),
    ("INPUT_SIZE", "0", r"TRANSFER_SERVICE_INPUT_SIZE=0 must be in \[8, 1024\]"),
])
def test_a_bad_setting_stops_the_service_with_one_line(variable, value, message, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(300))
    root = tmp_path / "root"
    root.mkdir()
    env = {**os.environ, "TRANSFER_OUTPUT_ROOT": str(root), "TRANSFER_FEATURE_CACHE": str(root / "features"),
           f"TRANSFER_SERVICE_{variable}": value.format(garbage=garbage)}
    done = subprocess.run([sys.executable, "-m", "uvicorn", "functions.efficiency.service:app", "--host", "127.0.0.1",
                           "--port", str(free_port())], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert re.fullmatch(rf"error: .*{message}.*\n", done.stderr), done.stderr
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("changes, message", [
    ({"extractor": "vgg"}, r"TRANSFER_SERVICE_EXTRACTOR='vgg' is unknown"),
    ({"method": "nosuch"}, r"TRANSFER_SERVICE_METHOD='nosuch' is unknown"),
    ({"classes": (1, 1)}, r"TRANSFER_SERVICE_CLASSES=1,1 needs at least two different classes"),
    ({"folder": "SVHN"}, r"TRANSFER_SERVICE_FOLDER / TRANSFER_SERVICE_SETUP: unknown dataset folder 'SVHN'"),
    ({"max_evaluations": 0}, r"TRANSFER_SERVICE_MAX_EVALUATIONS=0 must be at least 1"),
])
def test_settings_refuse_what_the_service_cannot_serve(changes, message):
    with pytest.raises(DataError, match=message):
        ServiceSettings(**changes)


def test_settings_from_the_environment_are_typed():
    settings = ServiceSettings.from_env({"TRANSFER_SERVICE_CLASSES": "0,3", "TRANSFER_SERVICE_DATASET": "FashionMNIST",
                                  "TRANSFER_SERVICE_POOL": "50", "TRANSFER_SERVICE_TASK": ""})
    assert (settings.classes, settings.dataset, settings.pool, settings.task) == ((0, 3), "FashionMNIST", 50, "binary")
    with pytest.raises(DataError, match=r"TRANSFER_SERVICE_CLASSES='0,x' is not a list of integers, e.g. 0,1"):
        ServiceSettings.from_env({"TRANSFER_SERVICE_CLASSES": "0,x"})
