"""Feature extraction or fine-tuning on the command line: the settings' options are made from
``FeVsFtSettings``' declaration (option names and defaults included)."""
from __future__ import annotations

from pathlib import Path

from ..config import FOLDERS
from ..core.constraints import Interval, Many, Options
from ..models.registry import names as network_names
from ..runs.fe_vs_ft import OPTION_NAMES, PIPELINES, TARGETS, FeVsFtSettings
from . import DATA_HELP, EXECUTOR_ARGS, arg, command, declared_arg, declared_args, given


@command("fe-vs-ft", "feature extraction or fine-tuning? both pipelines over a few-shot grid, with accuracy, time, "
                     "FLOPs, memory and energy per run (tracked in MLflow)",
         arg("folder", nargs="?", choices=FOLDERS, metavar="folder",
             help=f"one of {FOLDERS}: its target classes (with --data: where the results go)"),
         arg("--setup"),
         arg("--target", default="folder", choices=list(TARGETS),
             help="the folder's target classes, or scikit-learn's 8 x 8 digits (offline; use --val-per-class 10)"),
         arg("--data", metavar="PATH", help="your own images instead: " + DATA_HELP),
         arg("--output", metavar="FOLDER", help="with --data and no folder: the folder its results go to (default: "
                                                "named after the data, e.g. Clipart)"),
         arg("--weights", type=Path, help="state-dict file (required for resnet50 / mobilenet_v2)"),
         declared_arg("--samples-per-class", Many(Interval(int, 1)), default=[1, 5, 10], help=""),
         declared_arg("--splits", Interval(int, 1, 100, what="the number of splits"), default=5,
                      help="seeded class-balanced training splits per size"),
         declared_arg("--pipelines", Many(Options(PIPELINES)), default=list(PIPELINES), help=""),
         # every setting defaults to None: the handler passes on those given, and refuses those that
         # only a pipeline which does not run would read
         declared_args(FeVsFtSettings, flags=OPTION_NAMES, backbone={"choices": network_names()}),
         arg("--select", action="store_true", help="also choose layers / classifier / C (FE) and frozen depth / "
                                                   "learning rate (FT) on the validation set at the largest N"),
         arg("--country", default="FRA", help="ISO 3166 alpha-3 code for codecarbon's carbon intensity"),
         arg("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else "
                                    "sqlite:///<output root>/mlflow.db)"),
         arg("--no-track", action="store_true", help="do not log runs to MLflow"),
         arg("--no-progress", action="store_true"),
         EXECUTOR_ARGS)
def fe_vs_ft(args):
    import pandas as pd
    from ..analysis import tradeoff
    from ..runs.fe_vs_ft import refuse_idle_settings, run_study
    from . import executor as executor_for
    folder = _results_folder(args)
    chosen = given(args, FeVsFtSettings.constraints)
    refuse_idle_settings(list(chosen), args.pipelines, args.select)
    settings = FeVsFtSettings(**chosen)
    executor = executor_for(args)
    try:
        study = run_study(folder, args.setup, settings, args.samples_per_class, args.splits, args.pipelines,
                          args.weights, track=not args.no_track, tracking_uri=args.tracking_uri, country=args.country,
                          select=args.select, target=args.target, progress=not args.no_progress, executor=executor,
                          data=args.data)
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
    for path in tradeoff.report(study, folder):
        print(f"wrote {path}")
    print(f"wrote {study.path}")


def _results_folder(args) -> str:
    """The study folder named, or with ``--data`` alone the image folder's own (``--output``, or
    named after the data as ``run --data`` names it)."""
    from ..core.errors import DataError
    if args.folder is not None and args.output is not None:
        raise DataError("--output names the folder of --data's results when no study folder is given: drop one")
    if args.folder is not None:
        return args.folder
    if args.data is None:
        raise DataError(f"give a study folder ({', '.join(FOLDERS)}) or your images (--data PATH)")
    if args.setup is not None:
        raise DataError("--setup chooses a study folder's classes: name the folder too, or drop --setup")
    from ..data.image_dataset import load_dataset
    from ..runs.backbone_study import output_folder
    return args.output or output_folder(load_dataset(args.data).name)
