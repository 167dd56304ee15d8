import ast
import importlib.util
import json
import subprocess
import sys

import nbformat
import pytest

from functions.notebooks import templates as notebooks
from functions.core.paths import REPO_ROOT
from functions.runs.papermill_grid import grid_points, point_name


@pytest.mark.parametrize("folder, kind", notebooks.all_notebooks())
def test_committed_notebook_matches_its_template(folder, kind):
    path = notebooks.path(folder, kind)
    assert path.exists(), f"{path} missing: run `python -m functions notebooks`"
    committed = nbformat.read(path, as_version=4)
    assert notebooks.same_cells(committed, notebooks.build(folder, kind)), \
        f"{path} differs from its template: run `python -m functions notebooks --execute {folder}`"
    assert "parameters" in committed.cells[1].metadata.get("tags", [])


def test_templates_are_valid_python():
    for template in sorted(notebooks.TEMPLATES.glob("*.py")):
        compile(template.read_text(), str(template), "exec")


@pytest.mark.parametrize("folder, kind", notebooks.all_notebooks())
def test_template_code_cells_compile_and_their_imports_exist(folder, kind):
    """Every code cell of every folder's notebook, magics left out, compiles; what it imports is there."""
    code_cells = [source for cell_type, source in notebooks.cells(folder, kind) if cell_type == "code"]
    for i, source in enumerate(code_cells):
        code = "\n".join(line for line in source.split("\n") if not line.startswith("%"))
        compile(code, f"{folder}/{kind} code cell {i}", "exec")
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    importlib.import_module(alias.name)
            elif isinstance(node, ast.ImportFrom):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), \
                        f"{folder}/{kind}: cannot import {alias.name} from {node.module}"


def test_grid_points_and_names():
    points = grid_points({"modes": [["F"], ["FR"]], "repeats": [1, 2]})
    assert len(points) == 4 and points[0] == {"modes": ["F"], "repeats": 1}
    assert point_name(points[0]) == "modes=F,repeats=1"


@pytest.mark.slow
def test_sweep_runs_each_point_and_reports_the_failed_one(tmp_path):
    """A grid of the 8 x 8 digits' truncation notebook (the empirical one's cells on the smallest
    images, re-checking no baseline): one good point and one bad, over papermill."""
    command = [sys.executable, "-m", "functions", "sweep", "MNIST_to_digits/truncation.ipynb", "--no-progress",
               "--grid", 'modes=[["FT"], ["XY"]]', "--param", "profile=quick",
               "--param", "percentages=[0.05]", "--param", "repeats=1", "--param", "cut_points=[6]",
               "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 passed, 1 failed" in done.stdout and "unknown mode 'XY'" in done.stdout
    folder = tmp_path / "modes=FT"
    assert (folder / "truncation.ipynb").exists()
    params, *runs = json.loads((folder / "MNIST_to_digits" / "results" / "results_cross_FT.json").read_text())
    assert params["truncate"] and [r["sampled_cut_point"] for r in runs] == [6]
