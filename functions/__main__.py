"""Command line: ``python -m functions <command> ...`` (see ``--help`` of each command)."""
from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

from .config import FOLDERS, SETUPS, get_setup, profile
from .data import DataError, SPECS, prepare
from .study import default_setup, plan


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _overrides(pairs) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise DataError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key] = _value(value)
    return out


def _experiment(args):
    return plan(args.folder, args.setup, args.profile, getattr(args, "mode", None) or "FR",
                getattr(args, "percentages", None), getattr(args, "repeats", None), getattr(args, "cuts", None),
                overrides=_overrides(args.set))


def cmd_prepare(args):
    for name in args.datasets:
        prepare(name)
        print(f"{name}: ready")


def cmd_pretrain(args):
    from .experiments import load_pretrained, pretrained_path
    targets = sorted(SETUPS) if args.all else [(args.folder, args.setup or default_setup(args.folder))]
    for folder, name in targets:
        setup = get_setup(folder, name)
        if args.all and setup.source_dataset not in args.datasets:
            continue
        cfg, _ = profile(args.profile, setup)
        cfg = cfg.replace(**_overrides(args.set))
        load_pretrained(setup, cfg)
        print(f"{folder}/{name}: {pretrained_path(setup, cfg)}")


def cmd_run(args):
    from .experiments import records_frame, run_sweep, summary_table
    setup, cfg, grid = _experiment(args)
    began = time.perf_counter()
    paths = run_sweep(setup, cfg, grid, baselines=not args.no_baselines, progress=not args.no_progress)
    seconds = time.perf_counter() - began
    frame = records_frame(*paths.values())
    frame = frame[frame.sampled_cut_point.isin([-1, *grid.cut_points]) & frame.sampled_percentage.isin(grid.percentages)]
    print(f"\n{setup.folder}/{setup.name}, mode {cfg.mode}: test accuracy, mean ± std over repeats")
    print(summary_table(frame).to_string())
    for path in paths.values():
        print(f"wrote {path}")
    if args.plot:
        from .plots import main_figure_from_files
        print(f"wrote {main_figure_from_files(setup, cfg.mode)}")
    print(f"sweep took {seconds:.0f} s")


def cmd_summary(args):
    from .experiments import records_frame, results_path, summary_table
    setup = get_setup(args.folder, args.setup or default_setup(args.folder))
    paths = [results_path(setup.folder, "baselines", setup.name), results_path(setup.folder, "results", setup.name, args.mode)]
    print(summary_table(records_frame(*[p for p in paths if p.exists()])).to_string())


def cmd_notebooks(args):
    from . import notebooks
    for folder, kind in notebooks.all_notebooks():
        if args.folders and folder not in args.folders:
            continue
        began = time.perf_counter()
        path = notebooks.write(folder, kind, execute=args.execute)
        print(f"executed {path} in {time.perf_counter() - began:.0f} s" if args.execute else f"wrote {path}",
              flush=True)


def cmd_sweep(args):
    from .sweeps import run_grid
    outcomes = run_grid(args.notebook, _overrides(args.grid), args.out, _overrides(args.param),
                        progress=not args.no_progress)
    for outcome in outcomes:
        print(f"{'FAILED' if outcome.error else 'ok    '} {outcome.folder}" + (f": {outcome.error}" if outcome.error else ""))
    failures = [o for o in outcomes if o.error]
    print(f"{len(outcomes) - len(failures)} passed, {len(failures)} failed")
    if failures:
        raise SystemExit(1)


def cmd_sample_efficiency(args):
    from .sample_efficiency import format_summary, run_study
    result = run_study(args.folder, args.setup, args.task, methods=tuple(args.methods), seeds=args.seeds,
                       batch_size=args.batch_size, max_samples=args.max_samples,
                       evaluation_frequency=args.evaluation_frequency, threshold=args.threshold, window=args.window,
                       extractor=args.extractor, cut=args.cut, weights=args.weights, input_size=args.input_size,
                       dataset=args.dataset, classes=args.classes, pool=args.pool, profile_name=args.profile,
                       update_url=args.update_url, progress=not args.no_progress, log=lambda *_: None)
    print(format_summary(result.table))
    print(f"wrote {result.path}")


def cmd_recommend(args):
    import pandas as pd
    from .data import REPO_ROOT
    from .experiments import write_json_atomic
    from .study import collected_records
    from .transferability import recommender_eval, save_records
    records = collected_records()
    table = recommender_eval(records)
    with pd.option_context("display.width", 200):
        print(f"{len(records)} records of {records['setup'].nunique()} setups; leave-one-setup-out:")
        print(table.round(3).to_string(index=False))
    out = REPO_ROOT / "benchmarks" / "results" if args.out is None else args.out
    print(f"wrote {save_records(records, out / 'transferability_records.csv')}")
    rows = table.round(6).astype(object).where(table.notna(), None)  # JSON has null, not NaN
    summary = {"setups": sorted(records["setup"].unique()), "features": table.attrs["features"],
               "methods": rows.to_dict(orient="records")}
    write_json_atomic(out / "transferability_recommender.json", summary)
    print(f"wrote {out / 'transferability_recommender.json'}")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m functions", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare-data", help="fetch and verify datasets under the data root")
    p.add_argument("datasets", nargs="+", choices=sorted(SPECS))
    p.set_defaults(func=cmd_prepare)

    def experiment_args(p, with_grid=True):
        p.add_argument("folder", nargs="?", help=f"one of {FOLDERS}")
        p.add_argument("--setup", help="class setup of the folder (regular, random, reverse, cross)")
        p.add_argument("--profile", default="quick", help="quick (CPU, minutes) or paper (the upstream grid)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one parameter")
        if with_grid:
            p.add_argument("--mode", default="FR", help="F, FR or FT")
            p.add_argument("--percentages", type=float, nargs="+")
            p.add_argument("--repeats", type=int)
            p.add_argument("--cuts", type=int, nargs="+")

    p = sub.add_parser("pretrain", help="train (or reuse) a folder's source model")
    experiment_args(p, with_grid=False)
    p.add_argument("--all", action="store_true", help="every setup whose source data is available")
    p.add_argument("--datasets", nargs="+", default=["MNIST", "FashionMNIST"], help="with --all: source datasets")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("run", help="baselines + cut-point sweep of one mode, then a summary table")
    experiment_args(p)
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--plot", action="store_true", help="also save the box plot of test accuracy per cut")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("notebooks", help="write the study notebooks from their templates")
    p.add_argument("folders", nargs="*", help="only these folders")
    p.add_argument("--execute", action="store_true", help="also run them (papermill) and keep the outputs")
    p.set_defaults(func=cmd_notebooks)

    p = sub.add_parser("sweep", help="run a notebook over a grid of parameters with papermill")
    p.add_argument("notebook", help="e.g. MNIST/empirical.ipynb")
    p.add_argument("--grid", action="append", metavar="KEY=[V1,V2,...]", help="a parameter and its list of values")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="a parameter fixed for every point")
    p.add_argument("--out", default="sweeps", help="output folder (one subfolder per grid point)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_sweep)

    from .heads import METHODS
    p = sub.add_parser("sample-efficiency", help="samples a linear head needs on frozen features, per method")
    p.add_argument("folder", help=f"one of {FOLDERS}")
    p.add_argument("--setup")
    p.add_argument("--task", default="all", choices=["all", "binary"], help="all target classes or the first two")
    p.add_argument("--dataset", help="with --classes: any dataset")
    p.add_argument("--classes", type=int, nargs="+", help="any class list instead of the folder's target classes")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--max-samples", type=int, default=1000)
    p.add_argument("--evaluation-frequency", type=int, default=1)
    p.add_argument("--threshold", type=float, default=0.8)
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--extractor", default="study", choices=["study", "mobilenet_v2", "resnet50"])
    p.add_argument("--weights", help="state-dict file for --extractor mobilenet_v2 / resnet50")
    p.add_argument("--cut", type=int, help="study extractor: pool after the first k blocks (default: all)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--pool", type=int, help="draw the stream from this many training images")
    p.add_argument("--profile", default="quick", help="profile of the folder's source model")
    p.add_argument("--update-url", help="measure an outside method: http://host:port serving /model/update_weights")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_sample_efficiency)

    p = sub.add_parser("recommend", help="leave-one-setup-out test of a recommender on every folder's "
                                         "transferability records")
    p.add_argument("--out", type=Path, help="folder for the collected records and the evaluation "
                                            "(default: benchmarks/results)")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("summary", help="summary table of a folder's results files")
    experiment_args(p)
    p.set_defaults(func=cmd_summary)
    return root


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
