"""Mutation testing of the core modules with mutmut, then the per-module report
(``benchmarks/results/mutation.json``, written by ``mutation_report.py``).

mutmut reads one configuration per directory, and runs, for each mutant, every selected test
that calls the mutated function.  The sweep tests (``tests/runs/test_sweeps.py``) train for
tens of seconds and call nearly all of the data, model and training code, so a module group
of their own runs against the unit tests of those layers: each group is a mutmut project in
``build/mutation/<group>/`` whose configuration is written here.  mutmut keeps its verdicts
there and re-tests only the mutants of functions that changed.

    python benchmarks/mutation.py                    # every group (``make mutation``)
    python benchmarks/mutation.py --group training   # one group
    python benchmarks/mutation.py --rerun-survivors  # after adding tests: re-test the survivors
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "mutation"
# what the tests need beside the package: the committed results, the benchmark scripts, the tests
SHARED = ["tests", "benchmarks", "MNIST", "FashionMNIST", "MNIST_to_FashionMNIST", "FashionMNIST_to_MNIST", "CIFAR"]
GROUPS = {
    "analysis": {
        "modules": ["functions/analysis/stats.py", "functions/analysis/transferability/scores.py",
                    "functions/efficiency/heads.py", "functions/efficiency/milestone.py"],
        "tests": ["tests/data/test_data.py", "tests/models/test_study_cnn.py", "tests/train/test_trainer.py", "tests/train/test_engine.py",
                  "tests/runs/test_sweeps.py", "tests/analysis/test_stats.py", "tests/efficiency/test_heads.py",
                  "tests/efficiency/test_benchmark.py", "tests/analysis/transferability"],
    },
    "training": {
        "modules": ["functions/data/tasks.py", "functions/models/study_cnn.py", "functions/train/trainer.py",
                    "functions/train/engine.py", "functions/runs/store.py"],
        "tests": ["tests/data/test_data.py", "tests/models/test_study_cnn.py", "tests/train/test_trainer.py", "tests/train/test_engine.py",
                  "tests/runs/test_store.py"],
    },
}
MUTMUT_OPTIONS = {"pytest_add_cli_args": ["-p", "no:cacheprovider", "-q"], "process_isolation": "forkserver"}


def toml_list(values) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def prepare(group: str) -> Path:
    """The group's directory: links to the package, the tests and what they read, and its config."""
    spec, where = GROUPS[group], WORK / group
    where.mkdir(parents=True, exist_ok=True)
    for name in ["functions", *SHARED]:
        link = where / name
        if not link.is_symlink():
            link.symlink_to(ROOT / name)
    (where / "pyproject.toml").write_text("\n".join([
        "# written by benchmarks/mutation.py: the mutmut project of one module group",
        "[tool.mutmut]",
        'source_paths = ["functions"]',
        f"only_mutate = {toml_list(spec['modules'])}",
        f"also_copy = {toml_list(SHARED)}",
        f"pytest_add_cli_args_test_selection = {toml_list(spec['tests'])}",
        f"pytest_add_cli_args = {toml_list(MUTMUT_OPTIONS['pytest_add_cli_args'])}",
        f"process_isolation = {json.dumps(MUTMUT_OPTIONS['process_isolation'])}",
        "",
    ]))
    return where


def exit_codes(group: str, module: str) -> dict | None:
    """mutmut's exit code per mutant of ``module`` (None: not run yet), or None without results."""
    meta = WORK / group / "mutants" / f"{module}.meta"
    return json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else None


def survivors(group: str) -> list[str]:
    """The mutants of the group's last run that survived or that no test reached."""
    return [name for module in GROUPS[group]["modules"]
            for name, code in (exit_codes(group, module) or {}).items() if code in (0, 33)]


def run(group: str, workers: int, rerun_survivors: bool) -> int:
    where = prepare(group)
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or "mutmut"
    env = {**os.environ, "TRANSFER_DATA_ROOT": os.environ.get("TRANSFER_DATA_ROOT", str(ROOT / "data")),
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    names = survivors(group) if rerun_survivors else []
    if rerun_survivors and not names:
        print(f"{group}: no survivors to re-test")
        return 0
    print(f"{group}: mutmut in {where.relative_to(ROOT)}" + (f", re-testing {len(names)} survivors" if names else ""))
    # the test list of a mutant is derived afresh so that tests added since the last run count
    (where / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    return subprocess.run([mutmut, "run", "--max-children", str(workers), *names], cwd=where, env=env).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", choices=sorted(GROUPS), action="append", help="only these groups (default: all)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="mutants tested at once")
    parser.add_argument("--rerun-survivors", action="store_true",
                        help="re-test the mutants that survived (or had no test) in the last run")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: give at least 1")
    for group in args.group or list(GROUPS):
        code = run(group, args.workers, args.rerun_survivors)
        if code != 0:
            print(f"{group}: mutmut exited with {code}", file=sys.stderr)
            return code
    from mutation_report import main as report
    return report()


if __name__ == "__main__":
    raise SystemExit(main())
