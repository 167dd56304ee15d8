"""Command line: ``python -m functions <command> ...`` (see ``--help`` of each command)."""
from __future__ import annotations

import argparse
import ast
import functools
import math
import os
import sys
import time
from pathlib import Path

from .config import FOLDERS, PROFILES, SETUPS, Config, get_setup, mode_names, parse_override, profile
from .core.errors import DataError, Interrupted
from .core.paths import REPO_ROOT
from .data.catalog import SPECS


def _ranged(kind, low=None, high=None, low_open=False, name="value"):
    """An argparse type: ``kind`` parsed, finite, and within [low, high] (``low_open``: above low)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        below = low is not None and (value <= low if low_open else value < low)
        if below or (high is not None and value > high):
            bounds = f"{'above' if low_open else 'at least'} {low}" if high is None else \
                f"in {'(' if low_open else '['}{low}, {high}]"
            raise argparse.ArgumentTypeError(f"{text} is out of range: {name} must be {bounds}")
        return value
    return parse


POSITIVE = _ranged(int, 1, name="it")
NON_NEGATIVE = _ranged(int, 0, name="it")
FRACTION = _ranged(float, 0.0, 1.0, low_open=True, name="a fraction of the training data")


class Distinct(argparse.Action):
    """A list option whose values must differ: a repeated value (5 5, or 0.01 0.010) would run or
    write the same thing twice."""

    def __call__(self, parser, namespace, values, option_string=None):
        repeated = sorted({str(v) for i, v in enumerate(values) if v in values[:i]})
        if repeated:
            raise argparse.ArgumentError(self, f"{', '.join(repeated)} given more than once; give each value once")
        setattr(namespace, self.dest, values)


def MODE(text: str) -> str:
    """A study mode (F, FR, FT) or fine-tuning strategy, as the config reads it."""
    try:
        Config().with_mode(text)
    except DataError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _key_values(pairs, read) -> dict:
    """``key=value`` arguments, each value read by ``read(key, text)``."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise DataError(f"expected key=value, got {pair!r}")
        key, text = pair.split("=", 1)
        if key.strip() in out:
            raise DataError(f"{key.strip()!r} is given twice; give each key once")
        out[key.strip()] = read(key.strip(), text)
    return out


def _overrides(pairs) -> dict:
    """``--set``: each value typed and checked against the config field of that name."""
    return _key_values(pairs, parse_override)


def _literal(_key: str, text: str):
    """A papermill parameter (any notebook parameter, so no config field types apply): a Python
    literal, or a bare word as a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _grid_values(pairs) -> dict:
    return _key_values(pairs, _literal)


def _experiment(args):
    from .notebooks.study import plan
    return plan(args.folder, args.setup, args.profile, getattr(args, "mode", None) or "FR",
                getattr(args, "percentages", None), getattr(args, "repeats", None), getattr(args, "cuts", None),
                overrides=_overrides(args.set))


def _option(name: str) -> str:
    """The command-line spelling of an argparse destination: ``task_cpus`` is ``--task-cpus``."""
    return f"--{name.replace('_', '-')}"


def _given(args, names) -> list[str]:
    """The options among ``names`` (argparse destinations) given on the command line.  An option
    that some uses of a command would ignore defaults to None in the parser, so that those uses can
    refuse it; it takes its real default from :func:`_fill` only after that check."""
    return [name for name in names if getattr(args, name) is not None]


def _fill(args, defaults: dict) -> None:
    """Each option of ``defaults`` that was not given takes its real default (after the checks)."""
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


RAY_DEFAULTS = {"address": "local", "task_cpus": 1.0, "task_gpus": 0.0, "max_retries": 3}


def _executor(args):
    """The executor ``--executor`` names; Ray's options are refused without it (they would be
    ignored), so they default to None here and take their real defaults only after this check."""
    given = [_option(name) for name in _given(args, RAY_DEFAULTS)]
    if given and args.executor != "ray":
        raise DataError(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --executor ray; drop "
                        f"{'it' if len(given) == 1 else 'them'} or add --executor ray")
    _fill(args, RAY_DEFAULTS)
    from .runs.executors import make_executor
    return make_executor(args.executor, *(getattr(args, name) for name in RAY_DEFAULTS))


def _check_writable(path: Path, what: str) -> None:
    """Refuse, before any work, a file that cannot be written: a folder in its place, a file where
    a folder of its path should be, or a folder this user cannot write to."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{what} {path} is a folder, not a file; move that folder away")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(f"{what} {path} cannot be written: {parent} is a file, not a folder; move it away or "
                        f"write elsewhere (results go under $TRANSFER_OUTPUT_ROOT; --out where a command has it)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"{what} {path} cannot be written: {parent} is not writable; choose another location")


def cmd_prepare(args):
    from .data.sources import prepare
    for name in args.datasets:
        prepare(name)
        print(f"{name}: ready")


def cmd_pretrain(args):
    from .runs.pretrained import load_pretrained, pretrained_path
    if not args.all and not args.folder:
        raise DataError(f"name a folder ({FOLDERS}) or give --all")
    if args.all and (args.folder or args.setup):
        raise DataError("--all pretrains every setup: drop the folder and --setup, or drop --all")
    if args.datasets is not None and not args.all:
        raise DataError("--datasets chooses among the setups of --all; add --all, or drop --datasets")
    datasets = args.datasets or ["MNIST", "FashionMNIST"]
    targets = sorted(SETUPS) if args.all else [(args.folder, get_setup(args.folder, args.setup).name)]
    if args.all:
        targets = [key for key in targets if SETUPS[key].source_dataset in datasets]
        if not targets:
            raise DataError(f"no setup pretrains on {datasets}; choose from "
                            f"{sorted({s.source_dataset for s in SETUPS.values()})}")
    for folder, name in targets:
        setup = get_setup(folder, name)
        cfg, _ = profile(args.profile, setup)
        cfg = cfg.replace(**_overrides(args.set))
        load_pretrained(setup, cfg)
        print(f"{folder}/{name}: {pretrained_path(setup, cfg)}")


def cmd_run(args):
    from .analysis.summary import records_frame, run_records, summary_table
    from .runs.store import BASELINE_CUT, results_path
    from .runs.sweep import run_sweep
    setup, cfg, grid = _experiment(args)
    for path in (results_path(setup.folder, "baselines", setup.name, profile=grid.profile),
                 results_path(setup.folder, "results", setup.name, cfg.mode, grid.profile)):
        _check_writable(path, "results file")
        if path.is_file():
            run_records(path)  # a damaged file is refused now, not after training
    executor = _executor(args)
    began = time.perf_counter()
    try:
        paths = run_sweep(setup, cfg, grid, baselines=not args.no_baselines, progress=not args.no_progress,
                          executor=executor)
    finally:
        executor.close()
    seconds = time.perf_counter() - began
    frame = records_frame(*paths.values())
    frame = frame[frame.sampled_cut_point.isin([BASELINE_CUT, *grid.cut_points])
                  & frame.sampled_percentage.isin(grid.percentages)]
    print(f"\n{setup.folder}/{setup.name}, mode {cfg.mode}: test accuracy, mean ± std over repeats")
    print(summary_table(frame).to_string())
    for path in paths.values():
        print(f"wrote {path}")
    if args.plot:
        from .analysis.plots import main_figure_from_files
        print(f"wrote {main_figure_from_files(setup, cfg.mode, grid.profile)}")
    print(f"sweep took {seconds:.0f} s")


def cmd_summary(args):
    from .analysis.summary import records_frame, summary_table
    from .runs.store import BASELINE_CUT, results_path
    if not args.folder:
        raise DataError(f"name a folder: one of {FOLDERS}")
    setup = get_setup(args.folder, args.setup)
    paths = [results_path(setup.folder, "baselines", setup.name, profile=args.profile),
             results_path(setup.folder, "results", setup.name, args.mode, args.profile)]
    present = [p for p in paths if p.exists()]
    if not present:
        raise DataError(f"no results files for {setup.folder}/{setup.name} mode {args.mode} ({paths[1]}); "
                        f"run `python -m functions run {setup.folder} --setup {setup.name} --mode {args.mode}` first")
    frame = records_frame(*present)
    if args.cuts:
        frame = frame[frame.sampled_cut_point.isin([BASELINE_CUT, *args.cuts])]
    if args.percentages:
        frame = frame[frame.sampled_percentage.isin(args.percentages)]
    if frame.empty:
        raise DataError(f"{', '.join(map(str, present))} hold no runs of cuts {args.cuts or 'any'} and percentages "
                        f"{args.percentages or 'any'}; drop --cuts / --percentages to see what they hold")
    print(summary_table(frame).to_string())


def cmd_recheck(args):
    from .notebooks.study import plan, recheck_run, shown_check
    from .runs.store import BASELINE_CUT
    setup, cfg, grid = plan(args.folder, args.setup, args.profile, args.mode)
    if args.baseline and args.cut is not None:
        raise DataError("give --cut or --baseline, not both: a baseline has no cut point")
    middle = grid.cut_points[len(grid.cut_points) // 2]
    cut_point = BASELINE_CUT if args.baseline else middle if args.cut is None else cfg.check_cut(args.cut)
    percentage = args.percentage or grid.percentages[0]
    check = recheck_run(setup, cfg, cut_point, percentage, args.repeat, device=args.device, profile=args.profile)
    shown = shown_check(check)
    run = "baseline" if cut_point == BASELINE_CUT else f"{cfg.mode} cut {cut_point}"
    print(f"{setup.folder}/{setup.name} {args.profile}, {run}, percentage {percentage:g}, repeat {args.repeat}: "
          f"stored {shown['stored test accuracy']}, trained again {shown['trained again']} "
          f"({'reproduced' if check['reproduced'] else 'NOT reproduced'}; compared by {check['compared']})")
    if not check["reproduced"]:
        raise SystemExit(1)


def cmd_salvage(args):
    from .runs.store import salvage
    kept, unread, copy = salvage(args.path)
    if copy is None:
        print(f"{args.path} reads whole ({kept} runs): nothing to salvage")
    else:
        print(f"kept the parameters and {kept} runs of {args.path}; {unread} bytes could not be read; "
              f"the damaged original is {copy}")


def cmd_notebooks(args):
    from .notebooks import templates as notebooks
    known = sorted({kind for _, kind in notebooks.all_notebooks()})
    unknown = sorted(set(args.kinds or ()) - set(known))
    if unknown:
        raise DataError(f"unknown notebook kind(s) {unknown}; choose from {known}")
    folders = sorted({folder for folder, _ in notebooks.all_notebooks()})
    unknown = sorted(set(args.folders) - set(folders))
    if unknown:
        raise DataError(f"no notebooks for folder(s) {unknown}; choose from {folders}")
    for folder, kind in notebooks.all_notebooks():
        if (args.folders and folder not in args.folders) or (args.kinds and kind not in args.kinds):
            continue
        began = time.perf_counter()
        path = notebooks.write(folder, kind, execute=args.execute)
        print(f"executed {path} in {time.perf_counter() - began:.0f} s" if args.execute else f"wrote {path}",
              flush=True)


def cmd_sweep(args):
    from .runs.papermill_grid import check_grid, run_grid
    grid, fixed = _grid_values(args.grid), _grid_values(args.param)
    check_grid(args.notebook, grid, fixed)  # the notebook and its parameter names, before Ray starts
    executor = _executor(args)
    try:
        outcomes = run_grid(args.notebook, grid, args.out, fixed, progress=not args.no_progress,
                            executor=executor)
    finally:
        executor.close()
    for outcome in outcomes:
        print(f"{'FAILED' if outcome.error else 'ok    '} {outcome.folder}" + (f": {outcome.error}" if outcome.error else ""))
    failures = [o for o in outcomes if o.error]
    print(f"{len(outcomes) - len(failures)} passed, {len(failures)} failed")
    if failures:
        raise SystemExit(1)


def cmd_sample_efficiency(args):
    from .efficiency.benchmark import format_summary, run_study
    study = args.extractor == "study"
    if study and args.input_size is not None:
        raise DataError("--input-size sizes the images of --extractor mobilenet_v2 / resnet50; the study extractor "
                        "takes its source dataset's size: drop --input-size")
    if not study and args.cut is not None:
        raise DataError(f"--cut cuts the study extractor; --extractor {args.extractor} has no cut: drop --cut")
    if args.profile is not None and (not study or args.weights):
        model = f"--weights {args.weights} is the model" if study else f"--extractor {args.extractor} is an " \
                                                                       f"ImageNet network"
        raise DataError(f"--profile chooses which of the folder's source models is the extractor; {model}, "
                        f"so --profile would be ignored: drop --profile")
    _fill(args, {"input_size": 224, "profile": "quick"})
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
    from .analysis.transferability import recommender_eval, save_records
    from .core.atomic import write_json_atomic
    from .notebooks.study import collected_records
    out = REPO_ROOT / "benchmarks" / "results" if args.out is None else args.out
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a folder (it receives transferability_records.csv and "
                        f"transferability_recommender.json)")
    for name in ("transferability_records.csv", "transferability_recommender.json"):
        _check_writable(out / name, "--out file")
    records = collected_records()  # refuses, naming it, a file that is not a readable CSV
    table = recommender_eval(records)
    with pd.option_context("display.width", 200):
        print(f"{len(records)} records of {records['setup'].nunique()} setups; leave-one-setup-out:")
        print(table.round(3).to_string(index=False))
    print(f"wrote {save_records(records, out / 'transferability_records.csv')}")
    rows = table.round(6).astype(object).where(table.notna(), None)  # JSON has null, not NaN
    summary = {"setups": sorted(records["setup"].unique()), "features": table.attrs["features"],
               "methods": rows.to_dict(orient="records")}
    write_json_atomic(out / "transferability_recommender.json", summary)
    print(f"wrote {out / 'transferability_recommender.json'}")


def cmd_zoo(args):
    import pandas as pd
    from .runs.zoo_matrix import SEEDS
    from .notebooks import zoo
    if args.action == "pretrain":
        ignored = [_option(name) for name in _given(args, ("seeds", *RAY_DEFAULTS))]
        ignored += ["--executor"] if args.executor != "in-process" else []
        if ignored:
            raise DataError(f"{', '.join(ignored)}: options of zoo build, which zoo pretrain would ignore; drop them")
        for name in zoo.pretrain(args.models):
            print(f"{name}: ready")
        return
    executor = _executor(args)
    try:
        records = zoo.build(args.models, args.seeds or SEEDS, executor=executor)
    finally:
        executor.close()
    with pd.option_context("display.width", 200):
        print(zoo.evaluation(records).round(3).to_string())


def cmd_recommend_model(args):
    import pandas as pd
    from .notebooks import zoo
    table = zoo.recommend_model(args.task, args.recommender)
    with pd.option_context("display.width", 200):
        print(f"models for {args.task}, ranked by {args.recommender} (trained on the bank's other tasks):")
        print(table.round(4).to_string())


def cmd_classify(args):
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError
    from .models.imagenet import BACKBONES, load_backbone, preprocess, top_labels
    images = []
    for path in args.images:
        try:
            with Image.open(path) as image:
                images.append(np.array(image.convert("RGB")))
        except FileNotFoundError:
            raise DataError(f"{path}: no such file")
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"{path} is not an image that Pillow can read ({err}); give a JPEG, PNG or similar")
    model = load_backbone(args.model, args.weights)
    size = BACKBONES[args.model].input_size
    for path, image in zip(args.images, images):
        (labels,) = top_labels(model, preprocess(torch.from_numpy(image).unsqueeze(0), size), args.top)
        print(f"{path}:")
        for label, probability in labels:
            print(f"  {probability:6.3f}  {label}")


# fe-vs-ft's options that one pipeline alone reads (refused when it does not run), and the settings they set
FE_VS_FT_SETTINGS = {"layers": "layers", "classifier": "classifier", "C": "C", "embedding": "embedding",
                     "frozen": "frozen", "hidden": "hidden", "optimizer": "optimizer", "lr": "lr",
                     "weight_decay": "weight_decay", "epochs": "max_epochs", "patience": "patience",
                     "batch_size": "batch_size"}


def cmd_fe_vs_ft(args):
    import dataclasses
    import pandas as pd
    from .analysis import tradeoff
    from .runs.fe_vs_ft import FeVsFtSettings, refuse_idle_settings, run_study
    given = _given(args, FE_VS_FT_SETTINGS)
    refuse_idle_settings([FE_VS_FT_SETTINGS[name] for name in given], args.pipelines, args.select)
    defaults = {f.name: f.default for f in dataclasses.fields(FeVsFtSettings)}
    _fill(args, {name: defaults[setting] for name, setting in FE_VS_FT_SETTINGS.items()})
    settings = FeVsFtSettings(backbone=args.backbone, input_size=args.input_size,
                              layers=tuple(args.layers) if args.layers else None,
                              classifier=args.classifier, C=args.C, embedding=args.embedding, frozen=args.frozen,
                              hidden=args.hidden, optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                              max_epochs=args.epochs, patience=args.patience, batch_size=args.batch_size,
                              val_per_class=args.val_per_class, crops=args.crops, seed=args.seed)
    executor = _executor(args)
    try:
        study = run_study(args.folder, args.setup, settings, args.samples_per_class, args.splits, args.pipelines,
                          args.weights, track=not args.no_track, tracking_uri=args.tracking_uri, country=args.country,
                          select=args.select, target=args.target, progress=not args.no_progress, executor=executor)
    finally:
        executor.close()
    with pd.option_context("display.width", 200):
        print(tradeoff.summary(study.records).round(4).to_string())
        if {"FE", "FT"} <= {r["pipeline"] for r in study.records}:
            print(tradeoff.guideline(study.records))
        if study.selection:
            print(f"model selection on the validation set ({max(args.samples_per_class)} per class, split 0); "
                  f"test scored once for the chosen candidate of each pipeline:")
            print(tradeoff.selection_table(study.selection).to_string())
    print(f"energy: {study.energy_source}")
    figure_name = f"{study.path.stem.removeprefix('fe_vs_ft_')}"
    for path in tradeoff.report(study, args.folder, figure_name):
        print(f"wrote {path}")
    print(f"wrote {study.path}")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m functions", description=__doc__)
    # no abbreviated options: `summary --set` would otherwise be read as --setup
    sub = root.add_subparsers(dest="command", required=True,
                              parser_class=functools.partial(argparse.ArgumentParser, allow_abbrev=False))

    p = sub.add_parser("prepare-data", help="fetch and verify datasets under the data root")
    p.add_argument("datasets", nargs="+", action=Distinct, choices=sorted(SPECS))
    p.set_defaults(func=cmd_prepare)

    def experiment_args(p, with_grid=True, trains=True):
        """``trains``: the options that decide what is trained (``--set``, ``--repeats``); a command
        that only reads results has none of them, rather than options it would ignore."""
        p.add_argument("folder", nargs="?", choices=FOLDERS, metavar="folder", help=f"one of {FOLDERS}")
        p.add_argument("--setup", help="class setup of the folder (regular, random, reverse, cross)")
        p.add_argument("--profile", default="quick", choices=PROFILES,
                       help="quick (CPU, minutes), range (the quick network from 0.1%% to 100%% of the target "
                            "data; CPU, under an hour per folder and mode) or paper (the upstream grid)")
        if trains:
            p.add_argument("--set", action="append", metavar="KEY=VALUE",
                           help="override one parameter (typed and range-checked against the config)")
        if with_grid:
            p.add_argument("--mode", default="FR", type=MODE, metavar="MODE",
                           help=f"one of {mode_names()}, or lora_r<rank> (e.g. lora_r2)")
            p.add_argument("--percentages", type=FRACTION, nargs="+", action=Distinct, help="fractions in (0, 1]")
            if trains:
                p.add_argument("--repeats", type=POSITIVE, help="runs per percentage and cut point (at least 1)")
            p.add_argument("--cuts", type=NON_NEGATIVE, nargs="+", action=Distinct, help="cut points 0..depth")

    def executor_args(p):
        p.add_argument("--executor", default="in-process", choices=["in-process", "ray"],
                       help="where cells train: this process, or tasks on a Ray cluster")
        # defaults None: _executor refuses them without --executor ray, then fills RAY_DEFAULTS
        p.add_argument("--address",
                       help="with --executor ray: 'local' (a Ray instance on this machine, dashboard off; the "
                            "default), 'auto' (the cluster this machine joined), or host:port / ray://host:port")
        p.add_argument("--task-cpus", type=_ranged(float, 0.0, 1024.0, low_open=True, name="CPUs per task"),
                       help="with --executor ray: CPUs per task (default 1)")
        p.add_argument("--task-gpus", type=_ranged(float, 0.0, 64.0, name="GPUs per task"),
                       help="with --executor ray: GPUs per task (default 0; 0.25: four tasks share one GPU)")
        p.add_argument("--max-retries", type=_ranged(int, 0, 100, name="retries"),
                       help="with --executor ray: times a task is run again when its worker dies (default 3)")

    p = sub.add_parser("pretrain", help="train (or reuse) a folder's source model")
    experiment_args(p, with_grid=False)
    p.add_argument("--all", action="store_true", help="every setup whose source data is available")
    p.add_argument("--datasets", nargs="+", action=Distinct, choices=sorted(SPECS),
                   help="with --all: source datasets (default: MNIST FashionMNIST)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("run", help="baselines + cut-point sweep of one mode, then a summary table")
    experiment_args(p)
    executor_args(p)
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--plot", action="store_true", help="also save the box plot of test accuracy per cut")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("notebooks", help="write the study notebooks from their templates")
    p.add_argument("folders", nargs="*", action=Distinct, help="only these folders ('.': the top-level notebooks over all folders)")
    p.add_argument("--kinds", nargs="+", action=Distinct, metavar="KIND", help="only these kinds of notebook (e.g. strategies)")
    p.add_argument("--execute", action="store_true", help="also run them (papermill) and keep the outputs")
    p.set_defaults(func=cmd_notebooks)

    p = sub.add_parser("sweep", help="run a notebook over a grid of parameters with papermill")
    p.add_argument("notebook", help="e.g. MNIST/empirical.ipynb")
    p.add_argument("--grid", action="append", metavar="KEY=[V1,V2,...]", help="a parameter and its list of values")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="a parameter fixed for every point")
    p.add_argument("--out", default="sweeps", help="output folder (one subfolder per grid point)")
    p.add_argument("--no-progress", action="store_true")
    executor_args(p)
    p.set_defaults(func=cmd_sweep)

    from .efficiency.heads import METHODS
    from .models.extractors import TORCHVISION_ARCHS
    p = sub.add_parser("sample-efficiency", help="samples a linear head needs on frozen features, per method")
    p.add_argument("folder", choices=FOLDERS, metavar="folder", help=f"one of {FOLDERS}")
    p.add_argument("--setup")
    p.add_argument("--task", default="all", choices=["all", "binary"], help="all target classes or the first two")
    p.add_argument("--dataset", choices=sorted(SPECS), help="with --classes: any dataset")
    p.add_argument("--classes", type=NON_NEGATIVE, nargs="+", action=Distinct, help="any class list instead of the folder's target classes")
    p.add_argument("--methods", nargs="+", action=Distinct, default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", type=POSITIVE, default=10)
    p.add_argument("--batch-size", type=POSITIVE, default=1)
    p.add_argument("--max-samples", type=POSITIVE, default=1000)
    p.add_argument("--evaluation-frequency", type=POSITIVE, default=1)
    p.add_argument("--threshold", type=_ranged(float, 0.0, 1.0, name="an accuracy"), default=0.8)
    p.add_argument("--window", type=POSITIVE, default=10)
    p.add_argument("--extractor", default="study", choices=["study", *TORCHVISION_ARCHS])
    p.add_argument("--weights", help="state-dict file for --extractor mobilenet_v2 / resnet50")
    p.add_argument("--cut", type=NON_NEGATIVE, help="study extractor: pool after the first k blocks (default: all)")
    p.add_argument("--input-size", type=_ranged(int, 8, 1024, name="the input size in pixels"),
                   help="--extractor mobilenet_v2 / resnet50: side of the square input (default 224)")
    p.add_argument("--pool", type=POSITIVE, help="draw the stream from this many training images")
    p.add_argument("--profile", choices=PROFILES, help="study extractor without --weights: profile of the folder's "
                                                        "source model (default quick)")
    p.add_argument("--update-url", help="measure an outside method: http://host:port serving /model/update_weights")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_sample_efficiency)

    p = sub.add_parser("recommend", help="leave-one-setup-out test of a recommender on every folder's "
                                         "transferability records")
    p.add_argument("--out", type=Path, help="folder for the collected records and the evaluation "
                                            "(default: benchmarks/results)")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("zoo", help="the model zoo: pretrain its study CNNs, or measure the model x task matrix "
                                   "over the task bank and evaluate the recommenders")
    p.add_argument("action", choices=["pretrain", "build"])
    p.add_argument("--models", nargs="+", action=Distinct, metavar="NAME", help="only these zoo models (default: all)")
    p.add_argument("--seeds", type=_ranged(int, 1, 100, name="seeds"),
                   help="build: training draws per task whose linear-probe accuracies are averaged (default 3)")
    executor_args(p)
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("recommend-model", help="rank the zoo's models for a target task before any fine-tuning")
    p.add_argument("--task", required=True, help="<dataset>:<classes>:<n>, e.g. MNIST:0,1,2:300 or digits:0-4:100")
    p.add_argument("--recommender", default="gradient boosting",
                   help="gradient boosting, linear regression, a score (logme, leep, nce, hscore, "
                        "hscore_shrinkage, sfda, nleep) or pretrain_accuracy")
    p.set_defaults(func=cmd_recommend_model)

    from .models.imagenet import BACKBONES
    p = sub.add_parser("classify", help="top ImageNet labels of images: check that a pretrained backbone loaded")
    p.add_argument("images", nargs="+", action=Distinct, type=Path, help="image files (JPEG, PNG, ...)")
    p.add_argument("--model", default="efficientnet_lite0", choices=sorted(BACKBONES))
    p.add_argument("--weights", type=Path, help="state-dict file instead of the installed weights package")
    p.add_argument("--top", type=_ranged(int, 1, 1000, name="the number of labels"), default=5)
    p.set_defaults(func=cmd_classify)

    from .models.backbones import NAMES as BACKBONE_NAMES
    from .train.classifiers import EMBEDDINGS, HEADS
    from .train.finetune import OPTIMIZERS
    positive_float = _ranged(float, 0.0, low_open=True, name="it")
    p = sub.add_parser("fe-vs-ft", help="feature extraction or fine-tuning? both pipelines over a few-shot grid, "
                                        "with accuracy, time, FLOPs, memory and energy per run (tracked in MLflow)")
    p.add_argument("folder", choices=FOLDERS, metavar="folder", help=f"one of {FOLDERS}: its target classes")
    p.add_argument("--setup")
    p.add_argument("--target", default="folder", choices=["folder", "digits"],
                   help="the folder's target classes, or scikit-learn's 8 x 8 digits (offline; use --val-per-class 10)")
    p.add_argument("--backbone", default="efficientnet_lite0", choices=BACKBONE_NAMES,
                   help="an ImageNet network, or 'study': the folder's own source CNN")
    p.add_argument("--weights", type=Path, help="state-dict file (required for resnet50 / mobilenet_v2)")
    p.add_argument("--samples-per-class", type=POSITIVE, nargs="+", action=Distinct, default=[1, 5, 10])
    p.add_argument("--splits", type=_ranged(int, 1, 100, name="the number of splits"), default=5,
                   help="seeded class-balanced training splits per size")
    p.add_argument("--pipelines", nargs="+", action=Distinct, default=["FE", "FT"], choices=["FE", "FT"])
    p.add_argument("--input-size", type=_ranged(int, 8, 1024, name="the input size in pixels"), default=96,
                   help="pixels the images are resized to (the backbone's native size: 224 for Lite0)")
    p.add_argument("--layers", nargs="+", action=Distinct, help="FE: stages pooled and concatenated (default: the last; "
                                               "Lite0 has stem, block1..block7, head)")
    # the options of one pipeline default to None: cmd_fe_vs_ft refuses them when that pipeline does not
    # run, then fills the defaults of FeVsFtSettings
    p.add_argument("--classifier", choices=HEADS, help="FE: the classifier on the features (default linear_svc)")
    p.add_argument("--C", type=positive_float, help="FE: inverse regularisation of the classifier (default 1)")
    p.add_argument("--embedding", choices=EMBEDDINGS,
                   help="FE: standardised features (standard, the default), or the full-network embedding's "
                        "ternary ones")
    p.add_argument("--frozen", type=NON_NEGATIVE, help="FT: stages kept frozen (default: all but the last two)")
    p.add_argument("--hidden", type=NON_NEGATIVE,
                   help="FT: units of a hidden layer in the head (0: none, the default)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="FT: the optimiser (default adam)")
    p.add_argument("--lr", type=positive_float, help="FT: learning rate (default 0.001)")
    p.add_argument("--weight-decay", type=_ranged(float, 0.0, name="the weight decay"),
                   help="FT: weight decay (default 0.0001)")
    p.add_argument("--epochs", type=POSITIVE, help="FT: at most this many epochs (default 30)")
    p.add_argument("--patience", type=POSITIVE, help="FT: early stopping patience in epochs (default 5)")
    p.add_argument("--batch-size", type=POSITIVE, help="FT: images per training step (default 16)")
    p.add_argument("--val-per-class", type=POSITIVE, default=20, help="images per class of the fixed validation set")
    p.add_argument("--crops", action="store_true", help="ten-crop evaluation of the test split (10x its cost)")
    p.add_argument("--select", action="store_true", help="also choose layers / classifier / C (FE) and frozen depth / "
                                                         "learning rate (FT) on the validation set at the largest N")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0)
    p.add_argument("--country", default="FRA", help="ISO 3166 alpha-3 code for codecarbon's carbon intensity")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///<output root>/mlflow.db)")
    p.add_argument("--no-track", action="store_true", help="do not log runs to MLflow")
    p.add_argument("--no-progress", action="store_true")
    executor_args(p)
    p.set_defaults(func=cmd_fe_vs_ft)

    p = sub.add_parser("summary", help="summary table of a folder's results files (--cuts, --percentages: only those)")
    experiment_args(p, trains=False)
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("recheck", help="train one stored run again and compare it with the file's (float32 within "
                                       "0.01, or a chaotic mode's first steps in float64); exit 1 when it differs")
    p.add_argument("folder", choices=FOLDERS, metavar="folder", help=f"one of {FOLDERS}")
    p.add_argument("--setup")
    p.add_argument("--profile", default="quick", choices=PROFILES)
    p.add_argument("--mode", default="FR", type=MODE, metavar="MODE", help=f"one of {mode_names()}")
    p.add_argument("--cut", type=NON_NEGATIVE, help="the run's cut point (default: the middle one)")
    p.add_argument("--baseline", action="store_true", help="the baseline run instead of a cut point")
    p.add_argument("--percentage", type=FRACTION, help="the run's fraction (default: the profile's smallest)")
    p.add_argument("--repeat", type=NON_NEGATIVE, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=cmd_recheck)

    p = sub.add_parser("salvage", help="keep the readable runs of a damaged results file (the original is kept "
                                       "beside it as <name>.damaged)")
    p.add_argument("path", type=Path, help="the results file")
    p.set_defaults(func=cmd_salvage)
    return root


def main(argv=None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as stop:  # argparse has printed what was wrong and the usage
        return stop.code
    try:
        args.func(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(stop, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; what was saved stays, and re-running the same command resumes", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
