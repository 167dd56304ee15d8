"""`make lab`: JupyterLab, started by the target's own command line, prints its URL with a token,
refuses requests without that token and runs the project's code in its kernel."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from types import SimpleNamespace

import nbformat
import pytest
import requests
import websocket
from nbformat.v4 import new_code_cell, new_notebook, new_output

from functions.core.paths import REPO_ROOT

START_TIMEOUT = 40
CELL_TIMEOUT = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lab_command() -> str:
    """The target's `jupyter lab` line as make expands it, with this interpreter's environment as
    the venv: the test starts what users start, not a copy of it."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    recipe = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(REPO_ROOT), "lab", f"VENV={sys.prefix}"],
                            env=env, capture_output=True, text=True, timeout=30, check=True).stdout
    lines = [line for line in recipe.splitlines() if "/bin/jupyter lab " in line]
    assert len(lines) == 1, recipe
    return lines[0]


def stop(process: subprocess.Popen) -> None:
    """SIGTERM lets the server shut its kernels down; SIGKILL only if it does not stop in time."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One server for the module. Its config, data, runtime and home folders are temporary: it
    reads none of the user's settings and leaves nothing behind. The token is the one it generates
    and prints, as users get it (a token passed in is printed masked, so would not show that)."""
    home = tmp_path_factory.mktemp("lab")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    env.update(PORT=str(port), HOME=str(home), JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTER_DATA_DIR=str(home / "data"), JUPYTER_RUNTIME_DIR=str(home / "runtime"))
    log_path = home / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(["/bin/sh", "-c", "exec " + lab_command()], cwd=REPO_ROOT, env=env,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        url = re.compile(rf"http://127\.0\.0\.1:{port}/lab\?token=([0-9a-f]{{32,}})")
        deadline = time.monotonic() + START_TIMEOUT
        while not (match := url.search(log_path.read_text())):
            assert process.poll() is None, f"server exited with {process.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"no URL with a token after {START_TIMEOUT} s:\n{log_path.read_text()}"
            time.sleep(0.2)
        yield SimpleNamespace(base=f"http://127.0.0.1:{port}", port=port, token=match.group(1))
    finally:
        stop(process)


def get(lab, path, token=None, **kwargs):
    params = {"token": token} if token else {}
    return requests.get(lab.base + path, params=params, timeout=10, allow_redirects=False, **kwargs)


def test_lab_answers_with_its_token(lab):
    status = get(lab, "/api/status", lab.token)
    assert status.status_code == 200, status.text
    assert get(lab, "/lab", lab.token).status_code == 200
    notebooks = get(lab, "/api/contents/MNIST", lab.token).json()["content"]
    assert "empirical.ipynb" in {item["name"] for item in notebooks}


def test_lab_refuses_requests_without_the_token(lab):
    for token in (None, "0" * len(lab.token)):
        assert get(lab, "/api/status", token).status_code in (401, 403)
        assert get(lab, "/api/contents/MNIST", token).status_code in (401, 403)
        page = get(lab, "/lab", token)
        assert page.status_code == 302 and "/login" in page.headers["Location"]


def execute_request(code: str, session: str) -> dict:
    """A messaging protocol v5 `execute_request` for the kernel's shell channel."""
    header = {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "session": session, "username": "test",
              "date": datetime.now(timezone.utc).isoformat(), "version": "5.3"}
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
               "allow_stdin": False, "stop_on_error": True}
    return {"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell"}


def run_cell(ws, cell, session: str) -> None:
    """Sends the cell, records its iopub outputs as nbformat outputs until the kernel is idle."""
    request = execute_request(cell.source, session)
    ws.send(json.dumps(request))
    deadline = time.monotonic() + CELL_TIMEOUT
    while True:
        assert time.monotonic() < deadline, f"no idle status after {CELL_TIMEOUT} s for {cell.source!r}"
        msg = json.loads(ws.recv())
        if msg["channel"] != "iopub" or msg["parent_header"].get("msg_id") != request["header"]["msg_id"]:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "execute_input":
            cell.execution_count = content["execution_count"]
        elif kind == "stream":
            cell.outputs.append(new_output("stream", name=content["name"], text=content["text"]))
        elif kind == "execute_result":
            cell.outputs.append(new_output("execute_result", data=content["data"],
                                           execution_count=content["execution_count"]))
        elif kind == "error":
            cell.outputs.append(new_output("error", ename=content["ename"], evalue=content["evalue"],
                                           traceback=content["traceback"]))
        elif kind == "status" and content["execution_state"] == "idle":
            return


def printed(cell) -> str:
    errors = [f"{o.ename}: {o.evalue}" for o in cell.outputs if o.output_type == "error"]
    assert not errors, errors
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def result(cell) -> str:
    return "".join(o.data["text/plain"] for o in cell.outputs if o.output_type == "execute_result")


def test_notebook_runs_in_the_servers_kernel(lab):
    """The study's code runs in a kernel of this server, started from the project's environment
    in the repository: what a notebook opened in the browser gets."""
    nb = new_notebook(cells=[
        new_code_cell("import os, sys\nprint(sys.prefix)\nos.getcwd()"),
        new_code_cell("from functions.config import get_setup\nprint(get_setup('MNIST').fine_tune_classes)"),
        new_code_cell("from functions.data.tasks import load_task\n"
                      "task = load_task('MNIST', [5, 6], 0.1, 42)\nprint(len(task.test))\ntask.num_classes"),
    ])
    auth = {"Authorization": f"token {lab.token}"}
    kernel = requests.post(f"{lab.base}/api/kernels", json={"name": "python3"}, headers=auth, timeout=30)
    assert kernel.status_code == 201, kernel.text
    kernel_id = kernel.json()["id"]
    try:
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{lab.port}/api/kernels/{kernel_id}/channels?token={lab.token}", timeout=CELL_TIMEOUT)
        try:
            session = uuid.uuid4().hex
            for cell in nb.cells:
                run_cell(ws, cell, session)
        finally:
            ws.close()
    finally:
        deleted = requests.delete(f"{lab.base}/api/kernels/{kernel_id}", headers=auth, timeout=30)
    assert deleted.status_code == 204, deleted.text
    assert requests.get(f"{lab.base}/api/kernels", headers=auth, timeout=10).json() == []

    nbformat.validate(nb)
    environment, setup, task = nb.cells
    assert printed(environment) == f"{sys.prefix}\n"
    assert result(environment) == repr(str(REPO_ROOT))
    assert printed(setup) == "(5, 6, 7, 8, 9)\n"
    # the official MNIST test split holds 892 fives and 958 sixes
    assert printed(task) == "1850\n"
    assert result(task) == "2"
    assert [cell.execution_count for cell in nb.cells] == [1, 2, 3]
