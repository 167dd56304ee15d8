"""The study folders' notebooks, generated from one template per kind.

The templates are the scripts in ``cells/``, in jupytext's percent format: ``# %%`` starts a code
cell and ``# %% [markdown]`` a markdown one, whose lines are comments; magics are commented out
(``# %matplotlib inline``), so every template is valid Python. What differs between folders is
marked ``{{name}}``: the folder, its class setup, and the parameters cell, which the generator
writes. The empirical and truncation notebooks differ only in their first two cells: the rest of
both is ``sweep.py``.

Every folder's notebooks are written by ``python -m functions notebooks`` (and executed with
``--execute``); a test checks that the committed notebooks' cells equal what the templates give.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from ..config import (ADAPTATION_MODES, ALIGNING_MODES, FOLDERS, PAPER_WEIGHT_FOLDERS, REGULARISERS, default_setup,
                      folder_settings, setup_names)
from ..core.paths import REPO_ROOT
from ..runs.backbone_adaptation import ADAPTATION_CUTS, ADAPTATION_REPEATS, TUNED_METHODS
from ..runs.papermill_grid import execute as execute_notebook

TEMPLATES = Path(__file__).with_name("cells")
# the folders with committed strategy sweeps (`make strategies`)
STRATEGY_FOLDERS = ("MNIST", "FashionMNIST", "MNIST_to_FashionMNIST", "FashionMNIST_to_MNIST")
# the modes whose range sweeps are committed per folder (`make range`): a notebook shows the whole
# data range by default where every mode it reads is among them
RANGE_MODES = {"MNIST": ("F", "FR", "FT"), "FashionMNIST": ("F", "FR", "FT"), "MNIST_to_FashionMNIST": ("FR",),
               "FashionMNIST_to_MNIST": ("FR",)}
# the range profile's fractions a transferability notebook scores: the cut points differ most there,
# a prediction before fine-tuning is worth most, and scoring takes seconds (10% of MNIST 5-9 takes
# a minute, more data minutes)
SCORED_RANGE_FRACTIONS = (0.001, 0.01)
# the cross-dataset folders, where the domain adaptation and distillation modes run (`make adaptation`)
ADAPTATION_FOLDERS = ("MNIST_to_FashionMNIST", "FashionMNIST_to_MNIST", "MNIST_to_digits")
# the modes an adaptation notebook shows, in its order: config's ADAPTATION_MODES with the unadapted
# reference first and AdaBN (BatchNorm statistics only) next, then (on the study CNN) distillation; the
# methods that condition on the source classifier's predictions only where the two domains' classes
# are the same (on a backbone between image folders they always are)
_NOTEBOOK_FIRST_MODES = ("source_only", "adabn")
CLASS_CONDITIONED = ("mcc", "cdan")


def _unadapted_first(skipped: tuple = ()) -> list[str]:
    return [*_NOTEBOOK_FIRST_MODES, *(mode for mode in ADAPTATION_MODES if mode not in (*_NOTEBOOK_FIRST_MODES,
                                                                                        *skipped))]


def adaptation_notebook_modes(folder: str) -> list[str]:
    return [*_unadapted_first(CLASS_CONDITIONED if folder in PAPER_WEIGHT_FOLDERS else ()), "distill"]


# the folders whose DANN and CORAL also choose their learning rate (mode <mode>-tuned, `make
# adaptation`), at the headline cut with this many repeats at these fractions: those where the
# classes of source and target mean the same, so that an alignment can help and its settings matter
TUNED_ALIGNMENT = {"MNIST_to_digits": ALIGNING_MODES}
TUNED_ALIGNMENT_REPEATS = 8
TUNED_ALIGNMENT_FRACTIONS = (0.01, 0.05)
# notebooks over every folder, at the repository's top level
TOP_LEVEL = ("reproduction", "model_zoo", "your_data")


@dataclass(frozen=True)
class ImageFolderStudy:
    """A folder of the cut-point study of a pretrained backbone on a folder of images (``run
    --data``): the images, the backbone and the sizes (None: the real profile's); with ``source``,
    also the adaptation of that backbone from the ``source`` images to these (``--source``)."""

    data: str
    backbone: str = "efficientnet_lite0"
    per_class: tuple | None = None
    fractions: tuple | None = None
    source: str | None = None
    strategy_per_class: tuple = ()
    tuned_strategies: bool = False  # the strategies' -tuned runs are committed
    regularisers: tuple = ()  # the regularisers of F whose runs are committed (every cut above, and -tuned)
    fe_vs_ft_per_class: tuple = ()  # a feature extraction or fine-tuning notebook at these sizes


# The fine-tuning strategies on a backbone (`make real`): at the middle size of the real profile, at
# the cut points where freezing or adapting a prefix is a choice (block2, block4, block6: the clipart
# study's validation picks block4 or block6), 8 repeats as F's runs there, with which they pair
BACKBONE_STRATEGY_MODES = ("F", "progressive", "discriminative", "lora_r4", "ia3", "bitfit")
BACKBONE_STRATEGY_CUTS, BACKBONE_STRATEGY_REPEATS = (3, 5, 7), 8
# each folder's empirical notebook covers F, FR and FT; the stamps have 11 images in their smallest
# classes, so their sizes stop at 5 per class
IMAGE_FOLDERS = {"Clipart": ImageFolderStudy("clipart", strategy_per_class=(5,), fe_vs_ft_per_class=(1, 5, 10),
                                             tuned_strategies=True, regularisers=REGULARISERS),
                 "Clipart_to_Stamps": ImageFolderStudy("stamps", per_class=(1, 2, 5), fractions=(1.0,),
                                                       source="clipart", strategy_per_class=(5,),
                                                       tuned_strategies=True, regularisers=REGULARISERS,
                                                       fe_vs_ft_per_class=(1, 2, 5))}


def _percent_cells(text: str) -> list:
    """The (type, source) cells of a script in the percent format."""
    cells = []
    for chunk in re.split(r"^# %%", text, flags=re.M)[1:]:
        header, _, body = chunk.partition("\n")
        lines = body.rstrip("\n").split("\n")
        if header == " [markdown]":
            cells.append(("md", "\n".join(line[2:] for line in lines)))  # "# text", or "#" when empty
        else:
            cells.append(("code", "\n".join(line[2:] if line.startswith("# %") else line for line in lines)))
    return cells


def _template(name: str, **values: str) -> list:
    """The cells of ``cells/<name>.py``, each ``{{key}}`` replaced by ``values[key]``."""
    file = TEMPLATES / f"{name}.py"
    if not file.exists():
        raise ValueError(f"no notebook template {name!r}")
    return [(cell_type, re.sub(r"\{\{(\w+)\}\}", lambda m: values[m[1]], source))
            for cell_type, source in _percent_cells(file.read_text())]


def _parameters(folder: str, profile: str = "quick", percentages: tuple | None = None,
                which: str = "those scored in seconds", comments: dict | None = None, **extra) -> str:
    """The study notebooks' parameters cell; ``extra`` adds parameters (``comments``: their comments)."""
    lines = [f"folder = {folder!r}", f"setup = {default_setup(folder)!r}  # the folder's class setup; others: "
             f"{setup_names(folder)}"]
    lines += [f"{k} = {v!r}" + (f"  # {comments[k]}" if k in (comments or {}) else "") for k, v in extra.items()]
    lines += ['profile = "quick"  # "quick": a CPU runs it in minutes; "paper": the upstream grid' if profile == "quick"
              else f'profile = {profile!r}  # "range": 0.1% to 100% of the target data (`make range`); "quick": a CPU '
                   'runs it in minutes; "paper": the upstream grid',
              f"percentages = {list(percentages)}  # of the profile's fractions, {which}"
              if percentages else "percentages = None  # None: the profile's fractions of the target training data",
              "repeats = None  # None: the profile's repeats per percentage",
              "cut_points = None  # None: every cut 0..depth",
              "seed = None  # None: the profile's generate_dataset_seed",
              'device = "auto"  # "auto": CUDA when present',
              "output_root = None  # None: $TRANSFER_OUTPUT_ROOT, else this repository's study folders"]
    return "\n".join(lines)


def _default_profile(folder: str, modes) -> str:
    """``range`` where the folder's range sweeps of all ``modes`` are committed, else ``quick``."""
    return "range" if set(modes) <= set(RANGE_MODES.get(folder, ())) else "quick"


def _transferability_parameters(folder: str) -> str:
    profile = _default_profile(folder, ["FR"])
    return _parameters(folder, profile, SCORED_RANGE_FRACTIONS if profile == "range" else None, mode="FR")


# the quick profile's fraction the strategies' committed sweeps run: few labels, where they differ most
STRATEGY_FRACTIONS = (0.01,)


# the folders whose strategies ran again at their chosen cuts choosing their learning rates (`make
# strategies`), with those runs' repeats: an exact test over the folder's strategies can then reach
# 0.05 after Holm's correction
TUNED_REPEATS = {"MNIST": 9, "FashionMNIST": 8, "MNIST_to_FashionMNIST": 8, "FashionMNIST_to_MNIST": 8}


# the folders whose strategies notebooks also show plain fine-tuning (F) and its regularisers
# (`make strategies` runs them there)
REGULARISED_FOLDERS = ("MNIST", "FashionMNIST", "MNIST_to_FashionMNIST", "FashionMNIST_to_MNIST")


def strategy_modes(folder: str) -> list[str]:
    """FR, the strategies (the LoRA rank sweep on MNIST, rank 4 elsewhere), and F with its
    regularisers where they ran."""
    ranks = (1, 2, 4, 8) if folder == "MNIST" else (4,)
    regularised = ["F", *REGULARISERS] if folder in REGULARISED_FOLDERS else []
    return ["FR", "progressive", "discriminative", *(f"lora_r{r}" for r in ranks), "ia3", "bitfit", *regularised]


def _adaptation_parameters(folder: str) -> str:
    return _parameters(folder, modes=adaptation_notebook_modes(folder) + ["FR"], settings=folder_settings(folder),
                       tuned_modes=list(TUNED_ALIGNMENT.get(folder, ())),
                       tuned_percentages=list(TUNED_ALIGNMENT_FRACTIONS), tuned_repeats=TUNED_ALIGNMENT_REPEATS,
                       comments={"settings": "overrides of every mode's parameters ({}: the profile's and each "
                                             "mode's own)",
                                 "tuned_modes": "also run as <mode>-tuned at the headline cut, choosing their "
                                                "learning rate without target labels",
                                 "tuned_percentages": "the fractions each <mode>-tuned ran",
                                 "tuned_repeats": "runs per fraction of each <mode>-tuned"})


# the parameters cell ({{parameters}}) of the study templates that have one
PARAMETERS = {
    "empirical": lambda folder: _parameters(folder, _default_profile(folder, ["F", "FR"]), modes=["F", "FR"]),
    "truncation": lambda folder: _parameters(folder, _default_profile(folder, ["FT"]), modes=["FT"]),
    "clustering": lambda folder: _parameters(folder, fine_tune_cut=3, max_images=300, per_channel=True),
    "visualizations": lambda folder: _parameters(folder, _default_profile(folder, ["FR"])),
    "transferability": _transferability_parameters,
    "strategies": lambda folder: _parameters(folder, percentages=STRATEGY_FRACTIONS,
                                             which="those the strategies' sweeps ran (`make strategies`)",
                                             modes=strategy_modes(folder),
                                             **({"tuned_repeats": TUNED_REPEATS[folder]} if folder in TUNED_REPEATS
                                                else {}),
                                             comments={"tuned_repeats": "runs per mode at its chosen cut that "
                                                                        "choose their learning rate"}),
    "adaptation": lambda folder: _adaptation_parameters(folder),
}


def _sizes(study: ImageFolderStudy) -> list[str]:
    if study.per_class is None and study.fractions is None:
        return ["per_class = None  # None: the real profile's sizes (1, 5, 10 images per class and the whole pool)",
                "fractions = None  # fractions of the training pool, beside or instead of per_class"]
    return [f"per_class = {list(study.per_class or ())!r}  # images per class",
            f"fractions = {list(study.fractions or ())!r}  # fractions of the training pool (1.0: all of it)"]


def _image_folder_parameters(folder: str, *lines: str) -> str:
    """An image folder's parameters cell: where its files go, ``lines``, and the output root."""
    return "\n".join([f"folder = {folder!r}  # where the results files and figures go", *lines,
                      "output_root = None  # None: $TRANSFER_OUTPUT_ROOT, else this repository's folders"])


def _cut_study_parameters(folder: str) -> str:
    study = IMAGE_FOLDERS[folder]
    return _image_folder_parameters(
        folder, f"data = {study.data!r}  # a prepared image folder's name, or the path of your folder or CSV",
        f"backbone = {study.backbone!r}  # any registered pretrained network", 'modes = ["F", "FR", "FT"]',
        *_sizes(study), "cut_points = None  # None: every cut point of each mode",
        "repeats = None  # None: the real profile's repeats")


def _backbone_adaptation_parameters(folder: str) -> str:
    study = IMAGE_FOLDERS[folder]
    return _image_folder_parameters(
        folder, f"source = {study.source!r}  # the labelled images (a prepared name, or a folder or CSV)",
        f"data = {study.data!r}  # the unlabelled images of the same classes, tested on",
        f"backbone_name = {study.backbone!r}  # any registered pretrained network",
        f"methods = {_unadapted_first()!r}",
        f"cut_points = {list(ADAPTATION_CUTS)!r}  # where the source model's frozen stages end",
        f"repeats = {ADAPTATION_REPEATS}",
        f"tuned_methods = {list(TUNED_METHODS)!r}  # their rate chosen too, at the cut the source's validation picks",
        'labelled_mode = "F"  # the labelled comparison: the cut-point study on the same images', *_sizes(study),
        "labelled_repeats = None  # None: the real profile's repeats")


def _fe_vs_ft_parameters(folder: str) -> str:
    """The parameters of a feature extraction or fine-tuning notebook: a study folder's target classes
    with its source CNN beside EfficientNet-Lite0, or an image folder's images with the ImageNet network."""
    image = IMAGE_FOLDERS.get(folder)
    if image is None:
        head = [f"folder = {folder!r}",
                f"setup = {default_setup(folder)!r}  # whose target classes (and source CNN) are used",
                'backbones = ["efficientnet_lite0", "study"]  # ImageNet EfficientNet-Lite0, and the folder\'s own '
                'source CNN']
    else:
        head = [f"folder = {folder!r}  # where the results files and figures go",
                f"data = {image.data!r}  # a prepared image folder's name, or the path of your folder or CSV",
                "setup = None  # the images' own classes (a study folder's class setup is for its digits or clothing)",
                f"backbones = [{image.backbone!r}]  # any registered ImageNet network",
                "val_per_class = 1  # images per class of the fixed validation set (the validation split of the "
                "smallest class caps it)"]
    sizes = list(image.fe_vs_ft_per_class) if image else [1, 5, 10]
    return "\n".join(head + [
        f"samples_per_class = {sizes!r}  # labelled training images per class",
        "splits = 5  # seeded class-balanced training splits per size",
        "input_size = 96  # pixels for the ImageNet backbone (native: 224; the study CNN keeps its 28)",
        'classifier = "linear_svc"  # FE: linear_svc, logistic, svc, knn or ridge',
        "frozen = None  # FT: stages kept frozen; None: all but the last two",
        "track = True  # log new runs to MLflow (sqlite:///<output root>/mlflow.db, or $MLFLOW_TRACKING_URI)",
        "output_root = None  # None: $TRANSFER_OUTPUT_ROOT, else this repository's study folders"])


def _fe_vs_ft_cells(folder: str) -> list:
    image = folder in IMAGE_FOLDERS
    return _template("fe_vs_ft", folder=folder, parameters=_fe_vs_ft_parameters(folder),
                     data_argument="data, val_per_class=val_per_class" if image else "None",
                     title="f'{folder}/{data}'" if image else "f'{folder}/{setup}'")


def kinds(folder: str) -> list[str]:
    if folder in IMAGE_FOLDERS:
        study = IMAGE_FOLDERS[folder]
        return ["empirical", "clustering", "visualizations"] + (["fe_vs_ft"] if study.fe_vs_ft_per_class else []) + \
            (["strategies"] if study.strategy_per_class else []) + (["adaptation"] if study.source else [])
    study_kinds = ["empirical", "truncation", "clustering", "visualizations", "transferability"]
    # the sample-efficiency study streams the target data of the folders whose datasets are
    # available offline and whose targets are large enough for its grid
    offline = ["sample_efficiency", "fe_vs_ft"] if folder not in ("CIFAR", "MNIST_to_digits") else []
    return study_kinds + offline + (["strategies"] if folder in STRATEGY_FOLDERS else []) + \
        (["adaptation"] if folder in ADAPTATION_FOLDERS else [])


def cells(folder: str, kind: str) -> list:
    if kind in TOP_LEVEL:
        return _template(kind)
    if folder in IMAGE_FOLDERS:
        study = IMAGE_FOLDERS[folder]
        if kind == "adaptation":
            return _template("backbone_adaptation", folder=folder, data=study.data, source=study.source,
                             labelled_mode="F", parameters=_backbone_adaptation_parameters(folder)) + \
                _template("adaptation_selection", tuned_records="{m: runs[m] for m in tuned_methods}")
        if kind == "fe_vs_ft":
            return _fe_vs_ft_cells(folder)
        if kind == "strategies":
            tuned = [f"regularisers = {list(study.regularisers)!r}  # tested against F, each run choosing its weight"] \
                if study.regularisers else []
            cells = _template("backbone_strategies", folder=folder, data=study.data, parameters=_image_folder_parameters(
                folder, f"data = {study.data!r}  # a prepared image folder's name, or the path of your folder or CSV",
                f"backbone = {study.backbone!r}  # any registered pretrained network",
                f"modes = {list(BACKBONE_STRATEGY_MODES)!r}  # the first is the reference",
                f"per_class = {list(study.strategy_per_class)!r}  # images per class",
                "fractions = []  # fractions of the training pool (1.0: all of it)",
                f"cut_points = {list(BACKBONE_STRATEGY_CUTS)!r}",
                f"repeats = {BACKBONE_STRATEGY_REPEATS}", *tuned))
            return cells + (_template("backbone_strategies_tuned") if study.tuned_strategies else []) + \
                (_template("backbone_strategies_regularised") if study.regularisers else [])
        if kind == "clustering":
            return _template("backbone_clustering", folder=folder, data=study.data,
                             parameters=_image_folder_parameters(
                                 folder, f"data = {study.data!r}  # a prepared image folder's name, or a folder or CSV",
                                 f"backbone = {study.backbone!r}  # any registered pretrained network",
                                 "fine_tune_cut = 7  # block6, the cut F's validation picks at most sizes; None: "
                                 "the one it picks on the whole pool",
                                 "max_images = 1000  # test images clustered at most (class-balanced)"))
        return _template("backbone_visualizations" if kind == "visualizations" else "cut_study", folder=folder,
                         data=study.data, parameters=_cut_study_parameters(folder))
    values = {"folder": folder, "setup": default_setup(folder)}
    if kind in PARAMETERS:
        values["parameters"] = PARAMETERS[kind](folder)
    # the folder's baselines are re-checked once, in its empirical notebook
    values["recheck_call"] = "study.recheck_table(chosen, plans, cut_point=middle, percentage=smallest, " \
        "device=device" + (")" if kind == "empirical" else ", baseline=False)")
    values["recheck_baseline_prose"] = " and one baseline" if kind == "empirical" else \
        " (the baseline is re-checked in the empirical notebook)"
    if kind == "fe_vs_ft":
        return _fe_vs_ft_cells(folder)
    parts = [kind, "sweep"] if kind in ("empirical", "truncation") else [kind]
    if kind == "adaptation" and folder in TUNED_ALIGNMENT:  # the label-free choices of the -tuned runs, judged
        parts.append("adaptation_selection")
        values["tuned_records"] = "{f'{mode}-tuned': records[f'{mode}-tuned'] for mode in tuned_modes}"
    if kind == "strategies":  # the learning rates chosen on validation where their runs are committed
        parts = [kind, *(["strategies_tuned"] if folder in TUNED_REPEATS else []),
                 *(["strategies_regularised"] if folder in REGULARISED_FOLDERS else []), "strategies_recheck"]
    return [cell for part in parts for cell in _template(part, **values)]
def build(folder: str, kind: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for i, (cell_type, source) in enumerate(cells(folder, kind)):
        cell = nbformat.v4.new_markdown_cell(source) if cell_type == "md" else nbformat.v4.new_code_cell(source)
        cell.id = f"{kind}-{i}"
        if i == 1:
            cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    return nb


def path(folder: str, kind: str) -> Path:
    return REPO_ROOT / folder / f"{kind}.ipynb"


def all_notebooks() -> list[tuple[str, str]]:
    """(folder, kind) of every notebook; the notebooks over all folders sit at the top level (".")."""
    return [(folder, kind) for folder in [*FOLDERS, *IMAGE_FOLDERS] for kind in kinds(folder)] + \
        [(".", kind) for kind in TOP_LEVEL]


def same_cells(a: nbformat.NotebookNode, b: nbformat.NotebookNode) -> bool:
    """Equal sources, types and tags: outputs and execution counts may differ."""
    key = lambda nb: [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]
    return key(a) == key(b)


def write(folder: str, kind: str, execute: bool = False, timeout: int = 1800) -> Path:
    """Write one notebook from the template, keeping stored outputs while the cells are unchanged."""
    target = path(folder, kind)
    fresh = build(folder, kind)
    if target.exists() and same_cells(nbformat.read(target, as_version=4), fresh) and not execute:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(fresh, target)
    if execute:
        execute_notebook(target, target, timeout=timeout)
        executed = nbformat.read(target, as_version=4)
        executed.cells = [c for c in executed.cells if "injected-parameters" not in c.metadata.get("tags", [])]
        for cell in executed.cells:  # papermill's bookkeeping varies run to run
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
        executed.metadata.pop("papermill", None)
        nbformat.write(executed, target)
    return target
