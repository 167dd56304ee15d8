"""Turn mutmut's verdicts (``build/mutation/<group>/mutants/**/*.py.meta``, see ``mutation.py``) into
``benchmarks/results/mutation.json``: per mutated module, how many mutants the suite killed,
how many survived, timed out, and how many of the survivors were examined and found equivalent
(listed with a reason in ``benchmarks/results/mutation_equivalents.txt``).

The score of a module is (killed + timeout) / (mutants - equivalent): a mutant that makes a
test hang is detected.  A mutant no test reaches counts as survived.

    python benchmarks/mutation_report.py        (``benchmarks/mutation.py`` runs it after mutmut)
"""
from __future__ import annotations

import json
import os
import platform
import sys
from collections import Counter
from importlib.metadata import version
from pathlib import Path

import torch

from mutation import GROUPS, ROOT, exit_codes

EQUIVALENTS = ROOT / "benchmarks" / "results" / "mutation_equivalents.txt"
REPORT = ROOT / "benchmarks" / "results" / "mutation.json"
TARGET = 0.85
# mutmut's exit codes (mutmut.stats.status_by_exit_code), folded into the report's four verdicts
VERDICT = {1: "killed", 3: "killed", 37: "killed", -11: "killed", -9: "killed",
           0: "survived", 5: "survived", 33: "survived",
           36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout"}


def mutated_modules() -> dict[str, str]:
    """Module path -> its group."""
    return {module: group for group, spec in GROUPS.items() for module in spec["modules"]}


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def read_equivalents() -> dict[str, str]:
    """``mutant name: why it changes nothing observable``, one per line; lines starting ``#`` are comments."""
    equivalents = {}
    for number, line in enumerate(EQUIVALENTS.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, why = line.partition(": ")
        if not sep or not why.strip():
            sys.exit(f"{EQUIVALENTS.name}:{number}: expected 'mutant_name: reason', got {line!r}")
        equivalents[name.strip()] = why.strip()
    return equivalents


def verdicts(module: str, group: str) -> dict[str, str]:
    codes = exit_codes(group, module)
    if codes is None:
        sys.exit(f"no mutmut results for {module} in group {group}: run `make mutation` first")
    unchecked = [name for name, code in codes.items() if code is None]
    if unchecked:
        sys.exit(f"{len(unchecked)} mutants of {module} were never run (e.g. {unchecked[0]}): "
                 "the mutmut run was interrupted; run `make mutation` again to finish it")
    unknown = {code for code in codes.values() if code not in VERDICT}
    if unknown:
        sys.exit(f"{module}: mutmut exit codes {sorted(unknown)} have no verdict here; look at them with "
                 "`mutmut results --all true` and add them to VERDICT")
    return {name: VERDICT[code] for name, code in codes.items()}


def module_row(found: dict[str, str], equivalents: dict[str, str]) -> dict:
    counts = Counter(found.values())
    equivalent = [name for name in found if name in equivalents]
    not_survivors = [name for name in equivalent if found[name] != "survived"]
    if not_survivors:
        sys.exit(f"{EQUIVALENTS.name} lists mutants the suite now kills: {not_survivors}; remove those lines")
    live = len(found) - len(equivalent)
    detected = counts["killed"] + counts["timeout"]
    return {"mutants": len(found), "killed": counts["killed"], "survived": counts["survived"],
            "timeout": counts["timeout"], "equivalent": len(equivalent),
            "score": round(detected / live, 4) if live else 1.0,
            "unexamined_survivors": sorted(n for n, v in found.items() if v == "survived" and n not in equivalents)}


def main() -> int:
    equivalents = read_equivalents()
    rows = {}
    found = {module: verdicts(module, group) for module, group in mutated_modules().items()}
    for module, verdict in found.items():
        rows[module] = module_row(verdict, equivalents)
    known = {name for verdict in found.values() for name in verdict}
    stale = sorted(set(equivalents) - known)
    if stale:
        sys.exit(f"{EQUIVALENTS.name} names mutants mutmut no longer makes: {stale}; remove those lines")
    report = {"tool": f"mutmut {version('mutmut')}",
              "machine": f"{cpu_name()}, {os.cpu_count()} cores, torch CPU capability "
                         f"{torch.backends.cpu.get_cpu_capability()}",
              "score": "(killed + timeout) / (mutants - equivalent)", "target": TARGET, "modules": rows}
    REPORT.write_text(json.dumps(report, indent=1) + "\n")
    width = max(map(len, rows))
    print(f"{'module':{width}}  mutants  killed  survived  timeout  equivalent  score")
    for module, row in rows.items():
        print(f"{module:{width}}  {row['mutants']:7d}  {row['killed']:6d}  {row['survived']:8d}  "
              f"{row['timeout']:7d}  {row['equivalent']:10d}  {row['score']:.3f}")
    below = [m for m, row in rows.items() if row["score"] < TARGET]
    if below:
        print(f"below {TARGET:.0%}: {', '.join(below)}")
    return 1 if below else 0


if __name__ == "__main__":
    raise SystemExit(main())
