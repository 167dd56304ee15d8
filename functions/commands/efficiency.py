"""The sample-efficiency benchmark on the command line; the protocol's options are made from
``benchmark.Protocol``'s declaration, with the defaults of ``run_study``."""
from __future__ import annotations

import inspect

from ..config import FOLDERS, INPUT_SIZE, PROFILES
from ..core.constraints import Interval, Many, Options
from ..core.errors import DataError
from ..data.catalog import SPECS
from ..efficiency.benchmark import EXTRACTORS, TASKS, Protocol, format_summary, run_study
from ..efficiency.heads import METHODS
from . import arg, command, declared_arg, declared_args, given

STUDY_DEFAULTS = {name: p.default for name, p in inspect.signature(run_study).parameters.items()}


@command("sample-efficiency", "samples a linear head needs on frozen features, per method",
         arg("folder", choices=FOLDERS, metavar="folder", help=f"one of {FOLDERS}"),
         arg("--setup"),
         declared_arg("--task", Options(TASKS), default=STUDY_DEFAULTS["task"],
                      help="all target classes or the first two"),
         declared_arg("--dataset", Options(tuple(sorted(SPECS))), help="with --classes: any dataset"),
         declared_arg("--classes", Many(Interval(int, 0)), help="any class list instead of the folder's target classes"),
         declared_arg("--methods", Many(Options(tuple(METHODS))), default=list(METHODS), help=""),
         declared_arg("--seeds", Interval(int, 1), default=STUDY_DEFAULTS["seeds"], help=""),
         declared_args(Protocol, shown=STUDY_DEFAULTS),
         declared_arg("--extractor", Options(EXTRACTORS), default=STUDY_DEFAULTS["extractor"], help=""),
         arg("--weights", help="state-dict file for --extractor mobilenet_v2 / resnet50"),
         declared_arg("--cut", Interval(int, 0), help="study extractor: pool after the first k blocks (default: all)"),
         declared_arg("--input-size", INPUT_SIZE, shown=STUDY_DEFAULTS["input_size"],
                      help="--extractor mobilenet_v2 / resnet50: side of the square input"),
         declared_arg("--pool", Interval(int, 1), help="draw the stream from this many training images"),
         declared_arg("--profile", Options(PROFILES), shown=STUDY_DEFAULTS["profile_name"],
                      help="study extractor without --weights: profile of the folder's source model"),
         arg("--update-url", help="measure an outside method: http://host:port serving /model/update_weights"),
         arg("--no-progress", action="store_true"))
def sample_efficiency(args):
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
    chosen = given(args, (*Protocol.constraints, "input_size"))  # the others keep run_study's defaults
    if args.profile is not None:
        chosen["profile_name"] = args.profile
    result = run_study(args.folder, args.setup, args.task, methods=tuple(args.methods), seeds=args.seeds,
                       extractor=args.extractor, cut=args.cut, weights=args.weights, dataset=args.dataset,
                       classes=args.classes, pool=args.pool, update_url=args.update_url,
                       progress=not args.no_progress, log=lambda *_: None, **chosen)
    print(format_summary(result.table))
    print(f"wrote {result.path}")
