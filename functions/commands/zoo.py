"""The transferability recommenders and the model zoo on the command line, and a check that an
ImageNet backbone loaded."""
from __future__ import annotations

from pathlib import Path

from ..core.constraints import Interval
from ..core.errors import DataError
from ..core.paths import REPO_ROOT
from ..models.registry import names as network_names
from . import (DATA_HELP, EXECUTOR_ARGS, Distinct, RayOptions, arg, check_writable, command, declared_arg, given,
               option_name)
from . import executor as executor_for


@command("recommend", "leave-one-setup-out test of a recommender on every folder's transferability records",
         arg("--out", type=Path, help="folder for the collected records and the evaluation "
                                      "(default: benchmarks/results)"))
def recommend(args):
    import pandas as pd
    from ..analysis.transferability import recommender_eval, save_records
    from ..core.atomic import write_json_atomic
    from ..notebooks.study import collected_records
    out = REPO_ROOT / "benchmarks" / "results" if args.out is None else args.out
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a folder (it receives transferability_records.csv and "
                        f"transferability_recommender.json)")
    for name in ("transferability_records.csv", "transferability_recommender.json"):
        check_writable(out / name, "--out file")
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


@command("zoo", "the model zoo: pretrain its study CNNs, measure the model x task matrix over the task bank and "
                "evaluate the recommenders, or evaluate them again on the stored matrix; ways: each model by "
                "feature extraction (at its last stage, and at the stage chosen on validation) and by fine-tuning on a "
                "sample of the tasks, with what each costs",
         arg("action", choices=["pretrain", "build", "evaluate", "ways"]),
         arg("--models", nargs="+", action=Distinct, metavar="NAME", help="only these zoo models (default: all)"),
         arg("--data", nargs="+", action=Distinct, metavar="PATH",
             help="build, evaluate or ways: tasks drawn from these images' classes instead of the built-in bank (" +
                  DATA_HELP + "), a bank of their own, evaluated also with the recommenders trained on the built-in "
                              "bank and the intervals it gives"),
         declared_arg("--seeds", Interval(int, 1, 100, what="seeds"),
                      help="build: training draws per task whose linear-probe accuracies are averaged (default 3)"),
         EXECUTOR_ARGS)
def zoo(args):
    import pandas as pd
    from ..notebooks import zoo as models
    if args.action != "build":
        ignored = [option_name(name) for name in given(args, ("seeds", *RayOptions.constraints))]
        ignored += ["--executor"] if args.executor != "in-process" else []  # ways: one cost meter, one process
        ignored += ["--models"] if args.action == "evaluate" and args.models else []
        ignored += ["--data"] if args.action == "pretrain" and args.data else []
        if ignored:
            raise DataError(f"{', '.join(ignored)}: options of zoo build, which zoo {args.action} would ignore; "
                            f"drop them")
    if args.action == "pretrain":
        for name in models.pretrain(args.models):
            print(f"{name}: ready")
        return
    if args.action == "ways":
        from ..analysis.model_zoo.ways import WAY_NAMES, gains
        measured = models.measure_ways(args.models, args.data)
        with pd.option_context("display.width", 200):
            for way in ("FE-layer", "FT"):
                print(f"{WAY_NAMES[way]} against {WAY_NAMES['FE']}, paired by model and task:")
                print(gains(measured, way=way).round(4).to_string())
        return
    if args.action == "evaluate":
        _, table = models.evaluate_files(models.bank_name(args.data))
    else:
        executor = executor_for(args)
        try:
            _, table = models.build(args.models, executor=executor, data=args.data, **given(args, ("seeds",)))
        finally:
            executor.close()
    with pd.option_context("display.width", 200):
        print(table.round(3).to_string())
        if "coverage" in table.attrs:
            from ..analysis.model_zoo.intervals import coverage_verdict
            coverage = table.attrs["coverage"]
            print(f"\nthe intervals the built-in bank gives, on these tasks:\n{coverage.round(3).to_string()}")
            print(coverage_verdict(coverage))


@command("recommend-model", "rank the zoo's models for a target task before any fine-tuning",
         arg("--task", help="<dataset>:<classes>:<n>, e.g. MNIST:0,1,2:300 or digits:0-4:100"),
         arg("--data", metavar="PATH", help="your own images: " + DATA_HELP + "; the task is all its classes, "
                                            "its accuracies unknown"),
         arg("--measure", action="store_true", help="--data: also train each model's linear probe on your task "
                                                     "(as the zoo matrix does) and show its accuracy beside the "
                                                     "prediction"),
         arg("--recommender", default="gradient boosting",
             help="gradient boosting, linear regression, a score (logme, leep, nce, hscore, hscore_shrinkage, sfda, "
                  "nleep, knn), pretrain_accuracy or params"),
         declared_arg("--level", Interval(float, 0, 1, low_open=True, high_open=True, what="the interval's level"),
                      default=0.9, help="coverage the accuracy intervals aim at (default 0.9)"),
         declared_arg("--budget-gflops", Interval(float, 0, low_open=True, what="the budget"),
                      help="also say which model and way to take at most this many GFLOPs per training image "
                           "to adapt"))
def recommend_model(args):
    import pandas as pd
    from ..notebooks import zoo
    if args.measure and args.data is None:
        raise DataError("--measure trains probes on your images; a bank task's accuracies are measured already: "
                        "give --data PATH, or drop --measure")
    table = zoo.recommend_model(args.task, args.recommender, data=args.data, measure=args.measure, level=args.level)
    with pd.option_context("display.width", 200):
        if args.data is None:
            print(f"models for {args.task}, ranked by {args.recommender} (trained on the bank's other tasks):")
        else:
            version = table.attrs["data"]
            print(f"models for {version['name']} (fingerprint {version['fingerprint'][:12]}, classes "
                  f"{', '.join(version['classes'])}; task {table.attrs['task']}), ranked by {args.recommender} "
                  f"(trained on the bank's tasks; " + ("measured_accuracy: each model's linear probe on your task)"
                                                         if args.measure else "accuracies on your images are not "
                                                                              "measured):"))
            table = table if args.measure else table.drop(columns="measured_accuracy")
        print(table.round(4).to_string())
        _print_choice(table, args.level, args.budget_gflops)


def _print_choice(table, level: float, budget_gflops: float | None) -> None:
    """The Pareto set of predicted accuracy against cost over model x way, and the choice under a budget."""
    from ..analysis.model_zoo.ways import WAY_NAMES, choose_within
    candidates = table.attrs["candidates"]
    front = candidates[candidates["pareto"]].sort_values("adapt_gflops_per_image")
    names = "; ".join(name for way, name in WAY_NAMES.items() if way in set(candidates["way"]))
    print(f"\nevery model each way ({names}): test accuracy "
          f"predicted with {level:.0%} conformal intervals (calibrated {table.attrs['calibration']}), and what adapting "
          f"costs per training image as measured on the zoo's tasks; the Pareto set, cheapest first (no cheaper "
          f"choice is predicted more accurate):")
    if table.attrs.get("outside"):
        print(f"  the task has {' and '.join(table.attrs['outside'])}: the predictions extrapolate, and the intervals' "
              f"coverage was not measured on tasks like it")
    for _, row in front.iterrows():
        print(f"  {row['model']:<24} {row['way']:<9} {row['adapt_gflops_per_image']:9.3f} GFLOPs "
              f"{row['adapt_seconds_per_image'] * 1000:8.1f} ms {row['adapt_mwh_per_image']:7.3f} mWh per image  "
              f"accuracy {row['accuracy_predicted']:.3f} [{row['low']:.3f}, {row['high']:.3f}]")
    if budget_gflops is not None:
        chosen = choose_within(candidates, budget_gflops)
        print(f"within {budget_gflops:g} GFLOPs per training image: " + (
            f"{chosen['model']} by {WAY_NAMES[chosen['way']]} (accuracy {chosen['accuracy_predicted']:.3f} "
            f"[{chosen['low']:.3f}, {chosen['high']:.3f}], {chosen['adapt_gflops_per_image']:.3f} GFLOPs)"
            if chosen is not None else
            f"nothing; the cheapest choice costs {candidates['adapt_gflops_per_image'].min():.3f} GFLOPs per "
            f"training image"))


@command("classify", "top ImageNet labels of images: check that a pretrained backbone loaded",
         arg("images", nargs="*", action=Distinct, type=Path, help="image files (JPEG, PNG, ...)"),
         arg("--data", metavar="PATH", help="every image of your own images instead: " + DATA_HELP + "; read at the "
                                            "model's input size"),
         arg("--model", default="efficientnet_lite0", choices=network_names("ImageNet")),
         arg("--weights", type=Path, help="state-dict file instead of the installed weights package"),
         declared_arg("--top", Interval(int, 1, 1000, what="the number of labels"), default=5))
def classify(args):
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError
    from ..models.imagenet import top_labels
    from ..models.registry import create_backbone
    if bool(args.images) == (args.data is not None):
        raise DataError("classify needs images: give image files, or --data PATH (a folder, CSV or prepared name), "
                        "one of them")
    if args.data is not None:
        from ..data.image_dataset import load_dataset
        dataset = load_dataset(args.data)  # listed and checked before the model loads
        backbone = create_backbone(args.model, args.weights)
        # decoded once into the cache at the model's input size; the manifest's paths name them
        paths = [dataset.manifest.root / entry.path for entry in dataset.manifest.entries]
        images = dataset.images(backbone.input_size, 3)
    else:
        paths, images = args.images, []
        for path in args.images:
            try:
                with Image.open(path) as image:
                    images.append(np.array(image.convert("RGB")))
            except FileNotFoundError:
                raise DataError(f"{path}: no such file")
            except (UnidentifiedImageError, OSError) as err:
                raise DataError(f"{path} is not an image that Pillow can read ({err}); give a JPEG, PNG or similar")
        backbone = create_backbone(args.model, args.weights)
    for path, image in zip(paths, images):
        pixels = torch.from_numpy(np.array(image)).float().div(255.0).permute(2, 0, 1).unsqueeze(0)
        # the shorter side resized to the input size, the centre cropped, no antialiasing
        x = backbone.adapt(pixels, crop_pct=1.0, antialias="never").contiguous()
        (labels,) = top_labels(backbone.network, x, args.top)
        print(f"{path}:")
        for label, probability in labels:
            print(f"  {probability:6.3f}  {label}")
