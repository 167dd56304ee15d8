"""The study's commands: data, source models, sweeps of a mode, their summary, re-checks and
salvage of results files, the notebooks and papermill grids."""
from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path

from ..config import FOLDERS, PROFILES, SETUPS, Config, folder_settings, get_setup, mode_names, profile
from ..core.constraints import Interval, Many, parse_field
from ..core.errors import DataError
from ..data.catalog import SPECS, dataset_names
from ..models.registry import names as network_names
from . import DATA_HELP, EXECUTOR_ARGS, Distinct, arg, check_writable, command, declared_arg, key_values
from . import executor as executor_for

FRACTION = Interval(float, 0.0, 1.0, low_open=True, what="a fraction of the training data",
                    help="fractions of the target's training data")
CUTS = Many(Interval(int, 0), help="cut points 0..depth")


def mode(text: str) -> str:
    """A study mode (F, FR, FT) or fine-tuning strategy, as the config reads it."""
    try:
        Config().with_mode(text)
    except DataError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def overrides(pairs) -> dict:
    """``--set``: each value typed and checked against the declaration of the config field of that name."""
    return key_values(pairs, lambda key, text: parse_field(Config, key, text, f"--set {key}={text!r}"))


def grid_values(pairs) -> dict:
    """papermill parameters (any notebook parameter, so no config declaration applies): Python
    literals, or a bare word as a string."""
    def literal(_key: str, text: str):
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    return key_values(pairs, literal)


def experiment_args(with_grid: bool = True, trains: bool = True, mode_default: str | None = "FR") -> list:
    """A folder's experiment; ``trains``: the options that decide what is trained (``--set``,
    ``--repeats``): a command that only reads results has none of them, rather than options it
    would ignore.  ``mode_default`` None: a command that tells a mode given from none (FR for a folder)."""
    args = [arg("folder", nargs="?", choices=FOLDERS, metavar="folder", help=f"one of {FOLDERS}"),
            arg("--setup", help="class setup of the folder (regular, random, reverse, cross)"),
            arg("--profile", default="quick", choices=PROFILES,
                help="quick (CPU, minutes), range (the quick network from 0.1%% to 100%% of the target data; CPU, "
                     "under an hour per folder and mode) or paper (the upstream grid)")]
    if trains:
        args.append(arg("--set", action="append", metavar="KEY=VALUE",
                        help="override one parameter (typed and range-checked against the config's declaration)"))
    if with_grid:
        args += [arg("--mode", default=mode_default, type=mode, metavar="MODE",
                     help=f"one of {mode_names()}, or lora_r<rank> (e.g. lora_r2)"),
                 declared_arg("--percentages", Many(FRACTION))]
        if trains:
            args.append(declared_arg("--repeats", Interval(int, 1), help="runs per percentage and cut point"))
        args.append(declared_arg("--cuts", CUTS))
    return args


def experiment(args):
    """The folder's experiment with its own settings (:func:`~functions.config.folder_settings`, as
    its notebooks and committed results files have them), then ``--set`` over them."""
    from ..notebooks.study import plan
    return plan(args.folder, args.setup, args.profile, getattr(args, "mode", None) or "FR",
                getattr(args, "percentages", None), getattr(args, "repeats", None), getattr(args, "cuts", None),
                overrides={**folder_settings(args.folder), **overrides(getattr(args, "set", None))})


@command("prepare-data", "fetch and verify datasets under the data root (clipart and stamps: image folders "
         "built from Debian packages)",
         arg("datasets", nargs="+", action=Distinct, choices=dataset_names()))
def prepare_data(args):
    from ..data.sources import prepare
    for name in args.datasets:
        prepare(name)
        print(f"{name}: ready")


@command("pretrain", "train (or reuse) a folder's source model",
         experiment_args(with_grid=False),
         arg("--all", action="store_true", help="every setup whose source data is available"),
         arg("--datasets", nargs="+", action=Distinct, choices=sorted(SPECS),
             help="with --all: source datasets (default: MNIST FashionMNIST)"))
def pretrain(args):
    from ..runs.pretrained import load_pretrained, pretrained_path
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
        cfg = cfg.replace(**overrides(args.set))
        load_pretrained(setup, cfg)
        print(f"{folder}/{name}: {pretrained_path(setup, cfg)}")


@command("run", "baselines + cut-point sweep of one mode, then a summary table",
         experiment_args(mode_default=None), EXECUTOR_ARGS,
         arg("--no-baselines", action="store_true"),
         arg("--at-chosen-cut", action="store_true",
             help="run only at the cut point that the saved runs' validation accuracy picks for each percentage "
                  "(with --repeats: more repeats where a comparison is made; a -tuned mode: the runs of the mode "
                  "without -tuned; with --source: the source's validation accuracy in the source-only runs)"),
         arg("--no-progress", action="store_true"),
         arg("--plot", action="store_true", help="also save the box plot of test accuracy per cut"),
         arg("--data", metavar="PATH", help="the study on your own images with a pretrained backbone instead of a "
                                            "folder: " + DATA_HELP + "; results go to a folder named after them"),
         arg("--backbone", choices=network_names(), help="with --data: the pretrained network cut at its stage "
                                                          "boundaries (default efficientnet_lite0)"),
         arg("--weights", type=Path, help="with --data: a state-dict file for the backbone"),
         arg("--source", metavar="PATH", help="with --data: domain adaptation of the backbone from these labelled "
                                              "images to --data's images, unlabelled (the same classes): source "
                                              "only, AdaBN, DANN and CORAL, or the one --mode names"),
         arg("--output", metavar="FOLDER", help="with --data: the study folder its results go to (default: named "
                                                "after the data, or <Source>_to_<Target> with --source)"),
         declared_arg("--per-class", Many(Interval(int, 1)),
                      help="with --data: data sizes in images per class (with --percentages: fractions too)"))
def run(args):
    from ..analysis.summary import records_frame, run_records
    from ..runs.store import BASELINE_CUT, results_path
    from ..runs.sweep import run_sweep
    if args.data is not None or args.backbone is not None:
        return _run_cut_study(args)
    for option in ("weights", "per_class", "source", "output"):
        if getattr(args, option) is not None:
            raise DataError(f"--{option.replace('_', '-')} is an option of the study on your own images: add "
                            f"--data PATH, or drop it")
    setup, cfg, grid = experiment(args)
    results = results_path(setup.folder, "results", setup.name, cfg.mode, grid.profile)
    for path in (results_path(setup.folder, "baselines", setup.name, profile=grid.profile), results):
        check_writable(path, "results file")
        if path.is_file():
            run_records(path)  # a damaged file is refused now, not after training
    # a mode that tunes its learning rate runs at the cut its untuned runs (every cut point) pick
    picking = results_path(setup.folder, "results", setup.name, cfg.replace(lr_fine_tunes=()).mode, grid.profile)
    grids = _at_chosen_cuts(args, cfg, grid, picking) if args.at_chosen_cut else [grid]
    executor = executor_for(args)
    began = time.perf_counter()
    try:
        for one in grids:
            paths = run_sweep(setup, cfg, one, baselines=not args.no_baselines, progress=not args.no_progress,
                              executor=executor)
    finally:
        executor.close()
    seconds = time.perf_counter() - began
    frame = records_frame(*paths.values())
    frame = frame[frame.sampled_cut_point.isin([BASELINE_CUT, *(c for one in grids for c in one.cut_points)])
                  & frame.sampled_percentage.isin(grid.percentages)]
    _report(frame, f"{setup.folder}/{setup.name}, mode {cfg.mode}: test accuracy, mean ± std over repeats",
            f"{setup.folder} {cfg.mode} ({grid.profile} profile)", paths)
    if args.plot:
        from ..analysis.plots import main_figure_from_files
        print(f"wrote {main_figure_from_files(setup, cfg.mode, grid.profile)}")
    print(f"sweep took {seconds:.0f} s")


def _run_cut_study(args):
    """``run --data PATH [--backbone NAME]``: the cut-point study of a pretrained backbone on a
    user's images (:mod:`functions.runs.backbone_study`), printed as the folders' sweeps are."""
    from ..analysis.summary import records_frame
    from ..config import ADAPTATION_MODES
    from ..runs import backbone_study as cut_study
    if args.data is None:
        raise DataError("--backbone names the network of the study on your own images: add --data PATH")
    refused = [name for name, given_ in (("a folder", args.folder), ("--setup", args.setup), ("--plot", args.plot),
                                          (f"--profile {args.profile}", args.profile != "quick")) if given_]
    if refused:
        raise DataError(f"{refused[0]} is not an option of the study on your own images (--data), which runs on "
                        f"its own grid profile ({cut_study.PROFILE}): drop it")
    if args.source is not None:
        if args.executor != "in-process":
            raise DataError("--executor ray is not an option of adaptation (--source), which runs in this process: "
                            "drop it")
        return _run_adaptation(args)
    if args.mode in ADAPTATION_MODES:
        raise DataError(f"--mode {args.mode} is an adaptation method: give --source PATH, the labelled images it "
                        f"adapts from")
    mode, strategy, _ = cut_study.parse_mode(args.mode or "FR")
    settings = _backbone_settings(args, cut_study.StrategySettings if strategy else cut_study.CutStudySettings)
    study = cut_study.CutStudy(args.data, mode, settings, folder=args.output, weights=args.weights)
    sweep = cut_study.real_grid(study, args.per_class, args.percentages, args.cuts, args.repeats)
    grids = _backbone_chosen_cuts(args, study, sweep) if args.at_chosen_cut else [sweep]
    executor = executor_for(args)
    began = time.perf_counter()
    try:
        for one in grids:
            paths = study.run(one, baselines=not args.no_baselines, progress=not args.no_progress, executor=executor)
    finally:
        executor.close()
    seconds = time.perf_counter() - began
    frame = records_frame(*paths.values())
    repeats = frame.sampled_percentage.map({study.fraction(size): sweep.repeats_for(size) for size in sweep.sizes})
    cuts = [-1, *(c for one in grids for c in one.cut_points)]
    frame = frame[frame.sampled_cut_point.isin(cuts) & repeats.notna() & (frame.repeat < repeats)]
    _report(frame, f"{study.folder}: {settings.backbone} at {settings.input_size} px, mode {study.mode}: test "
                   f"accuracy, mean ± std over repeats (columns: share of the training pool; "
                   f"{', '.join(f'{study.fraction(z):g} = {z.describe()}' for z in sweep.sizes)})",
            f"{study.folder} {study.mode}", paths)
    print(f"sweep took {seconds:.0f} s")


def _backbone_chosen_cuts(args, study, sweep) -> list:
    """``--at-chosen-cut`` on a backbone: one grid per size, at the cut point the validation
    accuracy of the mode's saved runs picks (a -tuned mode: the runs of the mode without -tuned)."""
    from ..notebooks.backbone import chosen_cut
    from ..runs import backbone_study as cut_study
    if args.cuts:
        raise DataError("--at-chosen-cut picks the cut point from the saved runs: drop --cuts")
    return [cut_study.CutGrid((size,), (chosen_cut(study, size),), (repeats,), sweep.profile)
            for size, repeats in zip(sweep.sizes, sweep.repeats)]


def _backbone_settings(args, settings_class):
    """The backbone studies' settings: ``--backbone``, then ``--set`` typed and checked against their declaration."""
    return settings_class(**{**({"backbone": args.backbone} if args.backbone else {}),
                             **key_values(args.set, lambda key, text: parse_field(
                                 settings_class, key, text, f"--set {key}={text!r}"))})


def _run_adaptation(args):
    """``run --data TARGET --source SOURCE``: domain adaptation of a cut backbone
    (:mod:`functions.runs.backbone_adaptation`), one results file per method, and its table."""
    from ..analysis.summary import records_frame, summary_table
    from ..config import ADAPTATION_MODES
    from ..notebooks.backbone_adaptation import chosen_cut
    from ..runs import backbone_adaptation as adaptation
    refused = [name for name, given_ in (("--per-class", args.per_class), ("--percentages", args.percentages),
                                          ("--no-baselines", args.no_baselines)) if given_]
    if refused:
        raise DataError(f"{refused[0]} is not an option of adaptation (--source), which uses every training image of "
                        f"the target, unlabelled: drop it")
    if args.mode is not None and args.mode not in adaptation.METHODS:
        raise DataError(f"--mode {args.mode} is not an adaptation method; choose one of {list(adaptation.METHODS)}, "
                        f"or drop --mode for {list(ADAPTATION_MODES)}")
    if args.at_chosen_cut and args.cuts:
        raise DataError("--at-chosen-cut picks the cut point from the saved source-only runs: drop --cuts")
    study = adaptation.AdaptationStudy(args.source, args.data, (args.mode,) if args.mode else ADAPTATION_MODES,
                                       _backbone_settings(args, adaptation.AdaptationSettings), folder=args.output,
                                       weights=args.weights)
    cuts = (chosen_cut(study),) if args.at_chosen_cut else tuple(args.cuts or adaptation.ADAPTATION_CUTS)
    began = time.perf_counter()
    paths = study.run(cuts, args.repeats or adaptation.ADAPTATION_REPEATS, progress=not args.no_progress)
    seconds = time.perf_counter() - began
    import pandas as pd
    frame = pd.concat([records_frame(path).assign(method=method) for method, path in paths.items()])
    print(f"\n{study.folder}: {study.settings.backbone}, test accuracy on the target images by method, mean ± std "
          f"over repeats (no target label seen)")
    print(summary_table(frame, columns="method").to_string())
    for path in paths.values():
        print(f"wrote {path}")
    print(f"sweep took {seconds:.0f} s")


def _report(frame, heading: str, what: str, paths: dict) -> None:
    """A sweep's summary table, its gains over the baseline with their verdict, and its files."""
    from ..analysis import stats
    from ..analysis.summary import gains_table, summary_table
    from ..runs.store import BASELINE_CUT
    print(f"\n{heading}")
    print(summary_table(frame).to_string())
    if (frame.sampled_cut_point == BASELINE_CUT).any():
        gains = stats.gains_over_baseline(frame, None)
        print("\nGain over the baseline trained on the same subsets (cut minus baseline; above 0: the pretrained "
              "layers help), mean over repeats [95% bootstrap interval]")
        print(gains_table(gains).to_string())
        print(stats.gains_verdict(gains, what))
    for path in paths.values():
        print(f"wrote {path}")


def _at_chosen_cuts(args, cfg: Config, grid, results: Path) -> list:
    """One grid per percentage, at the cut point :func:`~functions.analysis.stats.chosen_cuts`
    picks from the runs already in ``results`` (the validation accuracy of the repeats every cut has)."""
    import dataclasses

    from ..analysis.stats import chosen_cuts
    from ..analysis.summary import records_frame
    if args.cuts:
        raise DataError("--at-chosen-cut picks the cut point from the saved runs: drop --cuts")
    frame = records_frame(results) if results.is_file() else None
    if frame is not None:
        frame = frame[(frame.sampled_cut_point >= 0) & frame.sampled_percentage.isin(grid.percentages)]
    missing = [p for p in grid.percentages if frame is None or p not in set(frame.sampled_percentage)]
    if missing:
        raise DataError(f"--at-chosen-cut: {results} has no runs at {missing} to pick a cut point from; run the "
                        f"cut points there first (the same command without --at-chosen-cut)")
    chosen = chosen_cuts(frame)
    return [dataclasses.replace(grid, percentages=(p,), cut_points=(int(chosen[p]),),
                                repeats={p: grid.repeats_for(p)}) for p in grid.percentages]


@command("summary", "summary table of a folder's results files (--cuts, --percentages: only those)",
         experiment_args(trains=False))
def summary(args):
    from ..analysis.summary import records_frame, summary_table
    from ..runs.store import BASELINE_CUT, results_path
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


@command("recheck", "train one stored run again and compare it with the file's (float32 within 0.01, or a "
                    "chaotic mode's first steps in float64); exit 1 when it differs",
         arg("folder", choices=FOLDERS, metavar="folder", help=f"one of {FOLDERS}"),
         arg("--setup"),
         arg("--profile", default="quick", choices=PROFILES),
         arg("--mode", default="FR", type=mode, metavar="MODE", help=f"one of {mode_names()}"),
         declared_arg("--cut", CUTS.each, help="the run's cut point (default: the middle one)"),
         arg("--baseline", action="store_true", help="the baseline run instead of a cut point"),
         declared_arg("--percentage", FRACTION, help="the run's fraction (default: the profile's smallest)"),
         declared_arg("--repeat", Interval(int, 0), default=0),
         arg("--device", default="auto", choices=["auto", "cpu", "cuda"]))
def recheck(args):
    from ..notebooks.study import recheck_run, shown_check
    from ..runs.store import BASELINE_CUT
    setup, cfg, grid = experiment(args)
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


@command("salvage", "keep the readable runs of a damaged results file (the original is kept beside it as "
                    "<name>.damaged)",
         arg("path", type=Path, help="the results file"))
def salvage(args):
    from ..runs.store import salvage
    kept, unread, copy = salvage(args.path)
    if copy is None:
        print(f"{args.path} reads whole ({kept} runs): nothing to salvage")
    else:
        print(f"kept the parameters and {kept} runs of {args.path}; {unread} bytes could not be read; "
              f"the damaged original is {copy}")


@command("notebooks", "write the study notebooks from their templates",
         arg("folders", nargs="*", action=Distinct,
             help="only these folders ('.': the top-level notebooks over all folders)"),
         arg("--kinds", nargs="+", action=Distinct, metavar="KIND", help="only these kinds of notebook (e.g. strategies)"),
         arg("--execute", action="store_true", help="also run them (papermill) and keep the outputs"))
def notebooks(args):
    from ..notebooks import templates
    known = sorted({kind for _, kind in templates.all_notebooks()})
    unknown = sorted(set(args.kinds or ()) - set(known))
    if unknown:
        raise DataError(f"unknown notebook kind(s) {unknown}; choose from {known}")
    folders = sorted({folder for folder, _ in templates.all_notebooks()})
    unknown = sorted(set(args.folders) - set(folders))
    if unknown:
        raise DataError(f"no notebooks for folder(s) {unknown}; choose from {folders}")
    for folder, kind in templates.all_notebooks():
        if (args.folders and folder not in args.folders) or (args.kinds and kind not in args.kinds):
            continue
        began = time.perf_counter()
        path = templates.write(folder, kind, execute=args.execute)
        print(f"executed {path} in {time.perf_counter() - began:.0f} s" if args.execute else f"wrote {path}",
              flush=True)


@command("sweep", "run a notebook over a grid of parameters with papermill",
         arg("notebook", help="e.g. MNIST/empirical.ipynb"),
         arg("--grid", action="append", metavar="KEY=[V1,V2,...]", help="a parameter and its list of values"),
         arg("--param", action="append", metavar="KEY=VALUE", help="a parameter fixed for every point"),
         arg("--out", default="sweeps", help="output folder (one subfolder per grid point)"),
         arg("--no-progress", action="store_true"),
         EXECUTOR_ARGS)
def sweep(args):
    from ..runs.papermill_grid import check_grid, run_grid
    grid, fixed = grid_values(args.grid), grid_values(args.param)
    check_grid(args.notebook, grid, fixed)  # the notebook and its parameter names, before Ray starts
    executor = executor_for(args)
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
