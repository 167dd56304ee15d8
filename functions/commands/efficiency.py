"""The sample-efficiency benchmark on the command line; its options are made from the benchmark's
declarations (``benchmark.INPUTS``, ``benchmark.Protocol``), with the defaults of ``run_study``."""
from __future__ import annotations

import inspect

from ..config import FOLDERS
from ..core.constraints import Interval, Many, Options
from ..core.errors import DataError
from ..efficiency.benchmark import INPUTS, Protocol, format_summary, run_study
from ..efficiency.heads import METHODS
from . import DATA_HELP, arg, command, declared_arg, declared_args, given

STUDY_DEFAULTS = {name: p.default for name, p in inspect.signature(run_study).parameters.items()}


@command("sample-efficiency", "samples a linear head needs on frozen features, per method",
         arg("folder", choices=FOLDERS, metavar="folder", help=f"one of {FOLDERS}"),
         arg("--setup"),
         declared_arg("--task", INPUTS["task"], default=STUDY_DEFAULTS["task"]),
         declared_arg("--dataset", INPUTS["dataset"]),
         declared_arg("--classes", INPUTS["classes"]),
         arg("--data", metavar="PATH", help="your own images: " + DATA_HELP + "; every class of it is the "
                                            "target task"),
         declared_arg("--methods", Many(Options(tuple(METHODS))), default=list(METHODS), help=""),
         declared_arg("--seeds", Interval(int, 1), default=STUDY_DEFAULTS["seeds"], help=""),
         declared_args(Protocol, shown=STUDY_DEFAULTS),
         declared_arg("--extractor", INPUTS["extractor"], default=STUDY_DEFAULTS["extractor"]),
         arg("--weights", help="state-dict file for --extractor mobilenet_v2 / resnet50"),
         declared_arg("--cut", INPUTS["cut"]),
         declared_arg("--input-size", INPUTS["input_size"], shown=STUDY_DEFAULTS["input_size"]),
         declared_arg("--pool", INPUTS["pool"]),
         declared_arg("--profile", INPUTS["profile"], shown=STUDY_DEFAULTS["profile_name"]),
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
                       progress=not args.no_progress, log=lambda *_: None, data=args.data, **chosen)
    print(format_summary(result.table))
    print(f"wrote {result.path}")
