"""Pages generated at build time (mkdocs-gen-files), so that the site follows the code and the files.

* the API reference: one page per module found by walking ``functions/`` (none listed by hand);
* the package map: every module with the first line of its docstring;
* the command-line reference: the help of every subcommand, read through ``main`` (the console
  script's entry point) with the subcommand names taken from the top-level help;
* the notebook pages: every committed notebook that carries outputs, as it was executed;
* the results tables: the committed ``range`` results files and ``benchmarks/results/*.json``.
"""
import ast
import contextlib
import io
import json
import os
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "functions"
sys.path.insert(0, str(ROOT))  # this checkout's package, not another installed copy


def _write(path: str, text: str) -> None:
    with mkdocs_gen_files.open(path, "w") as f:
        f.write(text)


def _modules() -> list[tuple[str, Path]]:
    """Dotted names of every module of the package, in path order."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        if "cells" in rel.parts:  # notebook templates, not modules
            continue
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        found.append((".".join(parts), path))
    return found


def _first_line(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    first = doc.strip().split("\n\n")[0]
    return " ".join(first.split()).replace("|", "\\|")


def api_reference() -> None:
    nav = mkdocs_gen_files.Nav()
    rows = ["# Package map", "",
            "Every module of `functions/`, found when the site is built, with the first paragraph of its "
            "docstring. A module imports only from layers below its own (`[tool.importlinter]` in "
            "`pyproject.toml`, checked by `make lint`).", "",
            "| module | what it is for |", "| --- | --- |"]
    for name, path in _modules():
        parts = tuple(name.split("."))
        page = Path("reference", "api", *parts).with_suffix(".md")
        nav[parts] = Path(*parts).with_suffix(".md").as_posix()
        _write(page.as_posix(), f"::: {name}\n")
        mkdocs_gen_files.set_edit_path(page.as_posix(), path.relative_to(ROOT).as_posix())
        rows.append(f"| [`{name}`]({Path('api', *parts).with_suffix('.md').as_posix()}) | {_first_line(path)} |")
    _write("reference/api/SUMMARY.md", "".join(nav.build_literate_nav()))
    _write("reference/package.md", "\n".join(rows) + "\n")


def _help(argv: list[str]) -> str:
    """What ``python -m functions <argv> --help`` prints, run in this process."""
    from functions.__main__ import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*argv, "--help"])
    return out.getvalue()


def _subcommands(text: str) -> list[str]:
    """The subcommand names in a usage line (argparse writes them as ``{a,b,c} ...``)."""
    usage = " ".join(text.split("\n\n")[0].split())
    found = re.search(r"(?<!\[)\{([\w,-]+)\} \.\.\.", usage)
    return found.group(1).split(",") if found else []


def cli_reference() -> None:
    os.environ["COLUMNS"] = "100"  # the same line breaks on every terminal
    lines = ["# Command line", "",
             "`python -m functions <command>` (or the `transfer-study` script). Read from the parser when "
             "the site is built: this page is what `--help` prints.", ""]

    def add(argv: list[str], level: int) -> None:
        text = _help(argv)
        title = " ".join(argv) if argv else "python -m functions"
        lines.extend([f"{'#' * level} `{title}`", "", "```text", text.rstrip(), "```", ""])
        for sub in _subcommands(text) if len(argv) < 2 else []:
            add([*argv, sub], level + 1)

    add([], 2)
    _write("reference/cli.md", "\n".join(lines))


def notebooks() -> None:
    """Each committed notebook with outputs, under tutorials/<folder>/ (top-level ones under tutorials/)."""
    nav = ["* [The notebooks](index.md)"]
    groups = defaultdict(list)
    for path in sorted(ROOT.glob("*.ipynb")) + sorted(ROOT.glob("*/*.ipynb")):
        nb = json.loads(path.read_text())
        if not any(cell.get("outputs") for cell in nb["cells"]):
            continue  # committed from the template without outputs (CIFAR: no data offline)
        rel = path.relative_to(ROOT)
        nb["metadata"].pop("widgets", None)  # progress-bar widget state: its renderer loads from a CDN
        _write(Path("tutorials", rel).as_posix(), json.dumps(nb))
        groups[rel.parent.as_posix()].append(rel)
    for folder in sorted(groups, key=lambda g: (g != ".", g)):
        if folder != ".":
            nav.append(f"* {folder.replace('_to_', ' → ')}")
        for rel in groups[folder]:
            indent = "    " if folder != "." else ""
            nav.append(f"{indent}* [{rel.stem.replace('_', ' ')}]({rel.as_posix()})")
    _write("tutorials/SUMMARY.md", "\n".join(nav) + "\n")


def _records(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    return [r for r in data[1:] if r.get("status", "ok") == "ok"]


def range_tables() -> None:
    lines = ["# Range tables from the results files", "",
             "Computed from the committed results files of the `range` profile "
             "(`<Folder>/results/range/`) when the site is built: mean test accuracy of the baseline, "
             "of the best cut point (in brackets) and its gain over the baseline, per fraction of the "
             "target training data. The figures are the ones the visualisations notebooks drew.", ""]
    for results in sorted(ROOT.glob("*/results/range/results_*_*.json")):
        folder = results.parts[-4]
        setup, mode = results.stem.removeprefix("results_").rsplit("_", 1)
        baselines = results.with_name(f"baselines_{setup}.json")
        if not baselines.exists():
            continue
        cells = defaultdict(list)
        for r in _records(results) + _records(baselines):
            cells[(r["sampled_percentage"], r["sampled_cut_point"])].append(r["test_acc"])
        percentages = sorted({p for p, _ in cells})
        lines += [f"## {folder}, {setup}, mode {mode}", "",
                  "| | " + " | ".join(f"{p * 100:g}%" for p in percentages) + " |",
                  "| --- |" + " --- |" * len(percentages)]
        base, best, gain, runs = [], [], [], []
        for p in percentages:
            means = {c: statistics.fmean(v) for (q, c), v in cells.items() if q == p}
            b = means.get(-1)
            cuts = {c: m for c, m in means.items() if c != -1}
            top = max(cuts, key=cuts.get) if cuts else None
            base.append(f"{b:.3f}" if b is not None else "")
            best.append(f"{cuts[top]:.3f} ({top})" if top is not None else "")
            gain.append(f"{cuts[top] - b:+.3f}" if top is not None and b is not None else "")
            runs.append(str(sum(len(v) for (q, _), v in cells.items() if q == p)))
        lines += ["| baseline | " + " | ".join(base) + " |", "| best cut | " + " | ".join(best) + " |",
                  "| gain | " + " | ".join(gain) + " |", "| runs | " + " | ".join(runs) + " |", ""]
        figure = results.parent / "figures" / f"gain_{setup}_{mode}.png"
        if figure.exists():
            target = f"results/figures/{folder}_{figure.name}"
            with mkdocs_gen_files.open(target, "wb") as f:
                f.write(figure.read_bytes())
            lines += [f"![{folder} {setup} {mode}: gain over the baseline per cut point](figures/{folder}_{figure.name})", ""]
    _write("results/range-tables.md", "\n".join(lines))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    return text.replace("|", "\\|").replace("\n", " ")


def _flatten(value, prefix="") -> list[tuple[str, object]]:
    if isinstance(value, dict):
        return [kv for k, v in value.items() for kv in _flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    return [(prefix, value)]


def _records_table(title: str, records: list[dict]) -> list[str]:
    """A list of records as a table of its scalar fields; nested lists of records follow as tables."""
    rows = [dict(_flatten(r)) for r in records[:40]]
    nested = {k for r in rows for k, v in r.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)}
    columns = [c for c in dict.fromkeys(k for r in rows for k in r) if c not in nested][:12]
    out = [f"**{title}** ({len(records)} rows)", "", "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    out += ["| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    out.append("")
    for r in rows:
        label = ", ".join(_cell(r[c]) for c in columns[:2] if c in r)
        for key in sorted(nested & set(r)):
            out += _records_table(f"{title}: {key} ({label})", r[key])
    return out


def benchmarks() -> None:
    lines = ["# Benchmark files", "",
             "Every file of `benchmarks/results/*.json`, read when the site is built. Lists of records "
             "are shown as tables (at most 40 rows); everything else as key and value. The explanation "
             "pages say what each benchmark measures and the scripts in `benchmarks/` how to run it.", ""]
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        data = json.loads(path.read_text())
        lines += [f"## `{path.name}`", ""]
        scalars = []
        for key, value in (data.items() if isinstance(data, dict) else [("records", data)]):
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                lines += _records_table(key, value)
            else:
                scalars += _flatten(value, key)
        if scalars:
            lines += ["| key | value |", "| --- | --- |"]
            lines += [f"| `{k}` | {_cell(v)} |" for k, v in scalars[:80]]
            if len(scalars) > 80:
                lines.append(f"| ... | {len(scalars) - 80} more keys in the file |")
            lines.append("")
    _write("results/benchmarks.md", "\n".join(lines))


api_reference()
cli_reference()
notebooks()
range_tables()
benchmarks()
