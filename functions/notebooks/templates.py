"""The study folders' notebooks, generated from one template per kind.

Every folder's notebooks differ only in their parameters cell, so they are written by
``python -m functions notebooks`` (and executed with ``--execute``); a test checks that the
committed notebooks' cells equal what the template gives.
"""
from __future__ import annotations

from pathlib import Path

import nbformat

from ..config import FOLDERS, default_setup, setup_names
from ..core.paths import REPO_ROOT
from ..runs.papermill_grid import execute as execute_notebook

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
IMPORTS = "%matplotlib inline\nfrom IPython.display import display\nfrom functions.analysis import plots, stats\nfrom functions.notebooks import study"


def _parameters(folder: str, profile: str = "quick", percentages: tuple | None = None, **extra) -> str:
    lines = [f"folder = {folder!r}", f"setup = {default_setup(folder)!r}  # the folder's class setup; others: "
             f"{setup_names(folder)}"]
    lines += [f"{k} = {v!r}" for k, v in extra.items()]
    lines += ['profile = "quick"  # "quick": a CPU runs it in minutes; "paper": the upstream grid' if profile == "quick"
              else f'profile = {profile!r}  # "range": 0.1% to 100% of the target data (`make range`); "quick": a CPU '
                   'runs it in minutes; "paper": the upstream grid',
              f"percentages = {list(percentages)}  # of the profile's fractions, those scored in seconds"
              if percentages else "percentages = None  # None: the profile's fractions of the target training data",
              "repeats = None  # None: the profile's repeats per percentage",
              "cut_points = None  # None: every cut 0..depth",
              "seed = None  # None: the profile's generate_dataset_seed",
              'device = "auto"  # "auto": CUDA when present',
              "output_root = None  # None: $TRANSFER_OUTPUT_ROOT, else this repository's study folders"]
    return "\n".join(lines)


PLAN = ("study.use_output_root(output_root)\n"
        "plans = {mode: study.plan(folder, setup, profile, mode, percentages, repeats, cut_points, seed)\n"
        "         for mode in modes}\n"
        "chosen, cfg, grid = plans[modes[0]]\n"
        "display(study.parameter_table(cfg, grid))")

SWEEP_CELLS = [
    ("md", "## The source model\nThe network pretrained on the source classes is loaded when a file with the same "
           "configuration exists (made by `make pretrained`), and trained otherwise. Its test accuracy on the source "
           "task says how good the features are that we are about to transfer."),
    ("code", "source = study.load_pretrained(chosen, cfg)\n"
             "info = study.pretrained_info(chosen, cfg)\n"
             "print(f\"source test accuracy {info['test_acc']:.3f} after {info['epochs']} epochs\")"),
    ("md", "## Sweeps\nEvery cut point is trained on the same balanced subsets (one per percentage and repeat) as the "
           "baseline, which trains the whole network from scratch. Results files are resumed: runs already in them "
           "are not trained again. The table gives mean ± standard deviation of test accuracy on the official test "
           "split."),
    ("code", "# NBVAL_IGNORE_OUTPUT: progress bars show rates and times\n"
             "paths = {mode: study.run_sweep(*plans[mode], device=device) for mode in modes}"),
    ("code", "for mode in modes:\n"
             "    print(f'mode {mode}')\n"
             "    display(study.summary_table(study.records_frame(*paths[mode].values())))"),
    ("md", "## Which cut point transfers best?\nOne panel per fraction of target data; each box holds the repeats of "
           "one cut point, the grey box the baseline. Boxes above the baseline mean the transferred layers help; the "
           "cut with the highest box is the best place to cut."),
    ("code", "for mode in modes:\n"
             "    records, baselines = study.sweep_records(chosen, mode, grid.profile)\n"
             "    figure = plots.accuracy_boxplot(records, baselines)\n"
             "    plots.save_figure(figure, folder, f'test_accuracy_{setup}_{mode}', grid.profile)\n"
             "    display(figure)"),
    ("md", "## Is the difference real?\nPaired Wilcoxon signed-rank tests (pairing runs that trained on the same "
           "subset), Holm-corrected within each percentage. Cut points sharing a letter are not significantly "
           "different; `same_as_best` marks those indistinguishable from the best. With few repeats nothing can be "
           "significant: the quick profile shows the mechanics, the paper profile gives the answer."),
    ("code", "for mode in modes:\n"
             "    records, baselines = study.sweep_records(chosen, mode, grid.profile)\n"
             "    print(f'mode {mode}')\n"
             "    display(stats.best_groups(records, baselines).round(3))"),
    ("md", "## Do the stored results still come out of the code?\nResults files are resumed, so the cells above "
           "read them. Here stored runs of the smallest fraction are trained again from scratch: the middle one of the "
           "notebook's cut points in each mode of this notebook and one baseline, each printed beside its stored test accuracy. "
           "Float rounding differs between kinds of CPU and moved these accuracies by up to 0.008 between the machines "
           "we measured, so a value trained again within 0.01 of the stored one is printed as the stored value; a code change that moves a "
           "result further prints the new number, and the notebook check fails."),
    ("code", "middle = grid.cut_points[len(grid.cut_points) // 2]  # cut 3 of 0..6\n"
             "study.recheck_table(chosen, plans, cut_point=middle, percentage=grid.percentages[0], device=device)"),
]


def _default_profile(folder: str, modes) -> str:
    """``range`` where the folder's range sweeps of all ``modes`` are committed, else ``quick``."""
    return "range" if set(modes) <= set(RANGE_MODES.get(folder, ())) else "quick"


def _empirical(folder: str, modes: list, title: str, question: str) -> list:
    return [("md", f"# {folder}: {title}\n{question}"),
            ("code", _parameters(folder, _default_profile(folder, modes), modes=modes)),
            ("code", f"{IMPORTS}\n{PLAN}"),
            *SWEEP_CELLS]


def _visualizations(folder: str) -> list:
    return [
        ("md", f"# {folder}: every figure of the study\nReads the folder's results files (written by the empirical "
               "and truncation notebooks) and draws the study's figures, saved under `results/figures/` "
               "(`results/<profile>/figures/` for a profile other than quick)."),
        ("code", _parameters(folder, _default_profile(folder, ["FR"]))),
        ("code", f"{IMPORTS}\nchosen, cfg, grid = study.plan(folder, setup, profile, 'FR', percentages, repeats, "
                 "cut_points, seed)\nstudy.use_output_root(output_root)\nmodes = study.available_modes(chosen, grid.profile)\n"
                 "runs = {mode: study.sweep_records(chosen, mode, grid.profile) for mode in modes}\nbaselines = runs[modes[0]][1]\n"
                 "print('modes with results:', modes)"),
        ("md", "## Mean accuracy versus amount of target data\nLines are means over repeats, bands the inter-quartile "
               "range; the x axis is logarithmic. Where a cut's line meets the baseline, transfer stops helping."),
        ("code", "for mode in modes:\n    figure = plots.mean_curves(runs[mode][0], baselines)\n"
                 "    plots.save_figure(figure, folder, f'mean_curves_{setup}_{mode}', grid.profile)\n    display(figure)"),
        ("md", "## Gain over the baseline\nEach cell is the mean test accuracy of a cut point minus the baseline's at "
               "the same percentage: warm colours mean transfer helps."),
        ("code", "for mode in modes:\n    figure = plots.gain_heatmap(runs[mode][0], baselines)\n"
                 "    plots.save_figure(figure, folder, f'gain_{setup}_{mode}', grid.profile)\n    display(figure)\n"
                 "    display(plots.gain_matrix(runs[mode][0], baselines).round(3))"),
        ("md", "## Train versus test accuracy\nPoints far below the diagonal overfit: they fit their few training "
               "images but do not generalise."),
        ("code", "for mode in modes:\n    figure = plots.train_vs_test(runs[mode][0], baselines)\n"
                 "    plots.save_figure(figure, folder, f'train_vs_test_{setup}_{mode}', grid.profile)\n    display(figure)"),
        ("md", "## Freeze, re-initialise or truncate?\nThe three modes side by side: F keeps the later layers and "
               "fine-tunes them, FR re-initialises them, FT removes them."),
        ("code", "figure = plots.compare_modes({mode: runs[mode][0] for mode in modes}, baselines)\n"
                 "plots.save_figure(figure, folder, f'modes_{setup}', grid.profile)\ndisplay(figure)"),
        ("md", "## Ranking of cut points\nMean rank over repeats (1 = best) per percentage, and the paired tests "
               "against the baseline (`cut_b` = -1) with Holm-adjusted p-values."),
        ("code", "for mode in modes:\n    print(f'mode {mode}')\n"
                 "    display(stats.rank_cut_points(*runs[mode]).round(3))\n"
                 "    tests = stats.paired_tests(*runs[mode])\n"
                 "    display(tests[tests.cut_b == -1].round(3))"),
    ]


def _clustering(folder: str) -> list:
    return [
        ("md", f"# {folder}: do the layers separate the classes?\nK-means (k = number of classes) on each layer's "
               "activations, scored against the true labels: adjusted Rand index (ARI, 0 = chance, 1 = perfect), "
               "normalised mutual information, cluster accuracy and pairwise precision/recall. Done for the pretrained "
               "model and a fine-tuned one, on source-task and target-task images."),
        ("code", _parameters(folder, fine_tune_cut=3, max_images=300, per_channel=True)),
        ("code", f"{IMPORTS}\nfrom functions.analysis import clustering\n"
                 "chosen, cfg, grid = study.plan(folder, setup, profile, 'FR', percentages, repeats, cut_points, seed)\n"
                 "study.use_output_root(output_root)\n"
                 "models = {'pretrained': study.load_pretrained(chosen, cfg),\n"
                 "          f'fine-tuned (FR, cut {fine_tune_cut})': study.fine_tuned_model(\n"
                 "              chosen, cfg, fine_tune_cut, grid.percentages[-1], device=device)}\n"
                 "data = {'source': cfg.source_task().train, 'target': cfg.target_task().train}\n"
                 "records = clustering.run_clustering(\n"
                 "    clustering.ari_path(folder, setup), cfg.params(), models, data, grid.percentages, grid.repeats,\n"
                 "    seed=cfg.generate_dataset_seed, max_images=max_images, n_init=5, per_channel=per_channel)\n"
                 "print(len(records), 'clustering records')"),
        ("md", "## ARI per layer\nMean over repeats of the ARI of the pooled channel vector. Rising values mean "
               "deeper layers separate the classes better; a drop on target data marks where the features become "
               "specific to the source classes."),
        ("code", "table = clustering.layer_scores(records, 'target').groupby(['model', 'layer'], sort=False)['ari']"
                 ".mean().unstack('layer')\ndisplay(table[clustering.layer_order(table.columns)].round(2))"),
        ("code", "for split in ('source', 'target'):\n    figure = plots.ari_boxplot(records, split=split)\n"
                 "    plots.save_figure(figure, folder, f'ari_{setup}_{split}')\n    display(figure)"),
        ("md", "## The best single channel\nThe highest ARI of any one channel per layer: a layer can hold a "
               "class-separating channel even when its pooled vector does not separate the classes."),
        ("code", "if per_channel:\n"
                 "    best = clustering.layer_scores(records, 'target', channels='max').groupby(['model', 'layer'],"
                 " sort=False)['ari'].mean().unstack('layer')\n"
                 "    display(best[clustering.layer_order(best.columns)].round(2))"),
    ]


def _transferability(folder: str) -> list:
    profile = _default_profile(folder, ["FR"])
    return [
        ("md", f"# {folder}: predicting the best cut without fine-tuning\nTransferability scores read one forward "
               "pass of the frozen source network over the target data and estimate how well the features entering "
               "each cut point serve the target task: LogME and H-score (plain and shrinkage) on the "
               "global-average-pooled (`_gap`) and flattened (`_flat`) activation, LEEP and NCE from the source "
               "head. Are they right? We compare them with the measured sweep."),
        ("code", _parameters(folder, profile, SCORED_RANGE_FRACTIONS if profile == "range" else None, mode="FR")),
        ("code", f"{IMPORTS}\nimport pandas as pd\nfrom functions.analysis import transferability\n"
                 "chosen, cfg, grid = study.plan(folder, setup, profile, mode, percentages, repeats, cut_points, seed)\n"
                 "study.use_output_root(output_root)\nsource = study.load_pretrained(chosen, cfg)\n"
                 "task = cfg.target_task()"),
        ("md", "## Scores per cut point\nEach percentage is scored on the images its first repeat trained on: the "
               "data a researcher would actually have. Higher is better for every score."),
        ("code", "scores = {p: transferability.cut_scores(source, study.training_subset(cfg, task, p, 0), progress=False)\n"
                 "          for p in grid.percentages}\n"
                 "for p in grid.percentages:\n    print(f'fraction {p:g} of the target training data')\n"
                 "    display(scores[p].round(3))"),
        ("md", "## Do the scores rank the cut points as the sweep does?\nKendall's tau and Spearman's rho between each "
               "score and the mean measured test accuracy over cut points; `top_cut_ok` says whether the score's "
               "favourite cut is the measured best or not significantly worse than it (paired Wilcoxon, Holm)."),
        ("code", "records, baselines = study.sweep_records(chosen, mode, grid.profile)\n"
                 "validation = study.validate_scores(scores, records)\n"
                 "display(validation.round(3))"),
        ("code", "figure = transferability.plot_score_vs_accuracy(scores[grid.percentages[0]], records, 'logme_flat')\n"
                 "plots.save_figure(figure, folder, f'logme_vs_accuracy_{setup}_{mode}', grid.profile)\ndisplay(figure)"),
        ("md", "## Verdict"),
        ("code", "print(study.transferability_verdict(validation))"),
        ("md", "## Records for the recommender\nOne row per percentage and cut point: model and target metadata, the "
               "scores and the measured accuracy, written beside the profile's results. `python -m functions "
               "recommend` collects the quick profile's rows of every folder and asks whether a regression on "
               "metadata and scores, tested on a setup it has not seen, ranks the cut points better than the best "
               "single score."),
        ("code", "path = study.save_transferability_records(chosen, cfg, scores, records, source, task, grid.profile)\n"
                 "table = pd.read_csv(path)\n"
                 "print(f'{len(table)} records with {table.shape[1]} columns in {path.name}; some of them:')\n"
                 "display(table[['setup', 'mode', 'percentage', 'cut_point', 'logme_flat', 'test_acc']].round(3))"),
    ]


def _sample_efficiency(folder: str) -> list:
    setup = default_setup(folder)
    parameters = "\n".join([
        f"folder = {folder!r}", f"setup = {setup!r}  # whose pretrained source model extracts the features",
        'tasks = ["binary", "all"]  # the first two target classes, and all of them',
        "methods = None  # None: every head-update method; the first is the baseline (adam)",
        "seeds = 10  # seeded streams per method: medians and IQRs are over these",
        "batch_size = 1  # samples per update", "max_samples = 1000  # stream length",
        "evaluation_frequency = 1  # validate after this many samples",
        "threshold = 0.8  # milestone: validation accuracy at or above this ...",
        "window = 10  # ... for this many consecutive evaluations",
        "output_root = None  # None: $TRANSFER_OUTPUT_ROOT, else this repository's study folders"])
    return [
        ("md", f"# {folder}: how few target samples does a linear head need?\nThe pretrained source network is "
               "frozen and its pooled last conv activation is the feature vector. Target images arrive one small "
               "batch at a time and only a linear head is updated. After every evaluation step the head is scored "
               "on the whole validation set; the **milestone** is the number of samples seen when the accuracy has "
               "stayed at or above the threshold for `window` consecutive evaluations. **Relative efficiency** is "
               "the baseline's milestone (one Adam step per batch) divided by the method's: 10 means the method "
               "needs a tenth of the samples."),
        ("code", parameters),
        ("code", "%matplotlib inline\nfrom IPython.display import Image, display\n"
                 "from functions.efficiency import benchmark, heads\nfrom functions.notebooks import study\n"
                 "study.use_output_root(output_root)\n"
                 "results = {task: benchmark.run_study(\n"
                 "    folder, setup, task, methods=tuple(methods or heads.METHODS), seeds=seeds, batch_size=batch_size,\n"
                 "    max_samples=max_samples, evaluation_frequency=evaluation_frequency, threshold=threshold,\n"
                 "    window=window, progress=False, log=lambda *_: None) for task in tasks}"),
        ("md", "## Milestones per method\nMedian and inter-quartile range of the milestone over the seeds that "
               "reached it, how many seeds never reached it within the stream, the median relative efficiency "
               "(over seeds where both the method and the baseline reached it) and the median final accuracy. "
               "Results files are resumed: a re-run with the same parameters reads them."),
        ("code", "for task, result in results.items():\n"
                 "    params = result.params\n"
                 "    print(f\"{task}: {params['dataset']} classes {params['classes']}, {params['pool_size']} samples to \"\n"
                 "          f\"stream, {params['val_size']} to validate\")\n"
                 "    print(benchmark.format_summary(result.table), end='\\n\\n')"),
        ("md", "## Learning curves and milestones\nFirst figure of each task: median validation accuracy (band: IQR "
               "over seeds) against the samples seen, log x; the dashed line is the threshold. Second: the milestones "
               "per method, with the number of seeds that never reached it under each box. Curves that rise "
               "earlier and boxes that sit lower mean fewer target samples are needed."),
        ("code", "for task, result in results.items():\n"
                 "    for figure in result.figures:\n"
                 "        display(Image(filename=str(figure)))"),
    ]


def _fe_vs_ft(folder: str) -> list:
    parameters = "\n".join([
        f"folder = {folder!r}", f"setup = {default_setup(folder)!r}  # whose target classes (and source CNN) are used",
        'backbones = ["efficientnet_lite0", "study"]  # ImageNet EfficientNet-Lite0, and the folder\'s own source CNN',
        "samples_per_class = [1, 5, 10]  # labelled training images per class",
        "splits = 5  # seeded class-balanced training splits per size",
        "input_size = 96  # pixels for the ImageNet backbone (native: 224; the study CNN keeps its 28)",
        'classifier = "linear_svc"  # FE: linear_svc, logistic, svc, knn or ridge',
        "frozen = None  # FT: stages kept frozen; None: all but the last two",
        "track = True  # log new runs to MLflow (sqlite:///<output root>/mlflow.db, or $MLFLOW_TRACKING_URI)",
        "output_root = None  # None: $TRANSFER_OUTPUT_ROOT, else this repository's study folders"])
    return [
        ("md", f"# {folder}: feature extraction or fine-tuning?\nWith N labelled images per class, is a frozen "
               "pretrained network feeding a classical classifier (**FE**: pooled features, standardised on the "
               "training images only, then a linear SVM) good enough, or is fine-tuning (**FT**: a new head, the "
               "last stages trained with Adam, early stopping on a fixed validation set) worth its cost? Both run "
               "on the same seeded training splits and are scored on the official test split; each run is charged "
               "for its time, counted FLOPs, peak memory and energy (codecarbon)."),
        ("code", parameters),
        ("code", "%matplotlib inline\nfrom IPython.display import display\nfrom functions.analysis import tradeoff\n"
                 "from functions.notebooks import study\nstudy.use_output_root(output_root)"),
        ("md", "## The runs\nResults files are resumed: runs already in them are not trained again."),
        ("code", "# NBVAL_IGNORE_OUTPUT\n# (progress bars show rates and times)\n"
                 "records = {backbone: study.fe_vs_ft(folder, setup, backbone, samples_per_class, splits, track=track,\n"
                 "                                    input_size=input_size, classifier=classifier, frozen=frozen)\n"
                 "           for backbone in backbones}"),
        ("md", "## Accuracy per pipeline and size\nMean over splits with the half-width of the 95% confidence "
               "interval, the mean per-class accuracy, and the mean cost of one run: training alone (FE: extracting "
               "the training and validation features and fitting the classifier; FT: fine-tuning), and with the "
               "evaluation of the test split. Energy in watt-hours, as codecarbon measures or estimates it on this "
               "machine."),
        ("code", "for backbone, runs in records.items():\n    print(backbone)\n"
                 "    display(tradeoff.summary(runs)[['splits', 'test_acc', 'ci95', 'mean_class_acc']].round(3))"),
        ("code", "# NBVAL_IGNORE_OUTPUT\n# (times and energy differ between machines)\n"
                 "for backbone, runs in records.items():\n    print(backbone)\n"
                 "    display(tradeoff.summary(runs)[['training_seconds', 'training_wh', 'training_gflops', 'total_seconds',\n"
                 "                                    'total_wh']].round(3))"),
        ("md", "## Accuracy against labelled images\nThis figure and the next are saved under `results/figures/` (and "
               "logged to MLflow with the summary when the grid trained new runs). Bands are 95% confidence intervals "
               "over the splits. Where the "
               "bands of FE and FT overlap, the cheap pipeline is as good as the expensive one."),
        ("code", "for backbone, runs in records.items():\n    display(tradeoff.accuracy_curves(runs, title=backbone))"),
        ("md", "## Accuracy against cost\nEach point is the mean run of one pipeline at one size (labelled with N). "
               "The dashed line joins the Pareto-optimal points: nothing else is both cheaper and more accurate."),
        ("code", "for backbone, runs in records.items():\n    display(tradeoff.pareto(runs, title=backbone))"),
        ("md", "## The guideline\nFT minus FE test accuracy, paired by split (both trained on the same images): the "
               "two are within noise where the 95% interval of the difference holds zero; otherwise the interval "
               "says which pipeline is better. Cost ratios compare training alone (the test evaluation is the same "
               "forward pass for both)."),
        ("code", "# NBVAL_IGNORE_OUTPUT\n# (the cost ratios differ between machines)\n"
                 "for backbone, runs in records.items():\n    print(backbone)\n    print(tradeoff.guideline(runs), end='\\n\\n')"),
        ("code", "for backbone, runs in records.items():\n    print(backbone)\n"
                 "    display(tradeoff.paired_differences(runs)[['pairs', 'ft_minus_fe', 'ci95', 'verdict']].round(3))"),
    ]


def strategy_modes(folder: str) -> list[str]:
    """FR and the strategies; the LoRA rank sweep on MNIST (rank 4 elsewhere)."""
    ranks = (1, 2, 4, 8) if folder == "MNIST" else (4,)
    return ["FR", "progressive", "discriminative", *(f"lora_r{r}" for r in ranks), "ia3", "bitfit"]


def _strategies(folder: str) -> list:
    return [
        ("md", f"# {folder}: which fine-tuning strategy?\nAt cut point k the pretrained blocks before k are kept "
               "and either frozen or adapted cheaply; the blocks from k on keep their pretrained weights and train, "
               "as in mode F; the output layer is new. Beside FR (blocks from k on re-initialised) and the baseline "
               "(no transfer), five strategies:\n\n"
               "- **progressive**: the head trains first, then one block per stage is unfrozen from the top down to "
               "block k (each stage at most `stage_epochs` epochs, ending early on a validation plateau; the last "
               "stage gets the full budget; the best weights of all stages are kept);\n"
               "- **discriminative**: every block from k on trains, block i at `lr * lr_decay ** (depth - i)`;\n"
               "- **lora_r&lt;rank&gt;**: LoRA adapters (peft) on the frozen blocks' convolutions, merged into the "
               "weights after training;\n"
               "- **ia3**: a learned scale per output channel of the frozen blocks' convolutions (peft);\n"
               "- **bitfit**: only the frozen blocks' biases train.\n\n"
               "All train on the same balanced subsets, seeds and epoch budget as FR, and are scored on the official "
               "test split."),
        ("code", _parameters(folder, modes=strategy_modes(folder))),
        ("code", f"{IMPORTS}\nfrom functions.analysis import strategies\n{PLAN}"),
        ("md", "## Sweeps\nResults files are resumed: runs already in them are not trained again (`make strategies` "
               "made them)."),
        ("code", "# NBVAL_IGNORE_OUTPUT\n# (progress bars show rates and times)\n"
                 "paths = {mode: study.run_sweep(*plans[mode], device=device) for mode in modes}\n"
                 "records, baselines, trainable = study.strategy_records(chosen, plans)\n"
                 "frame = strategies.strategy_frame(records, trainable)"),
        ("md", "## Accuracy per strategy and cut point\nOne panel per fraction of target data: mean test accuracy "
               "per cut point with inter-quartile bands, one line per strategy, the baseline a grey band. At cut 0 "
               "nothing is frozen, so the adapter strategies and BitFit coincide there."),
        ("code", "figure = plots.compare_modes(records, baselines)\n"
                 "plots.save_figure(figure, folder, f'strategies_{setup}')\ndisplay(figure)"),
        ("md", "## The best cut of each strategy\nPer percentage, the cut point with the highest mean test "
               "accuracy, its trainable parameters, mean epochs and the gain over the baseline. Progressive "
               "unfreezing trains longer than the others (up to `stage_epochs` per block above the cut before its "
               "last stage's full budget): read its gain together with its epochs."),
        ("code", "best = strategies.best_cuts(frame, baselines)\n"
                 "display(best.drop(columns='seconds').round(3))"),
        ("md", "## Accuracy against what is trained and what it costs\nEach point is one strategy at one cut point. "
               "Left of FR at the same height means as accurate with fewer trainable parameters. Times are seconds "
               "per run on the machine that made the results (FR's runs train in groups through the batched engine, "
               "and their time is the group's share per run)."),
        ("code", "figure = strategies.accuracy_against(frame, baselines, 'trainable_params')\n"
                 "plots.save_figure(figure, folder, f'strategies_parameters_{setup}')\ndisplay(figure)"),
        ("code", "# NBVAL_IGNORE_OUTPUT\n# (times differ between machines)\n"
                 "figure = strategies.accuracy_against(frame, baselines, 'seconds')\n"
                 "plots.save_figure(figure, folder, f'strategies_seconds_{setup}')\ndisplay(figure)\n"
                 "display(best['seconds'].unstack().round(2))"),
        ("md", "## Better than FR?\nEach strategy against FR at the same cut point, runs paired by repeat (both "
               "trained on the same subset): Wilcoxon signed-rank tests, Holm-corrected within each percentage. "
               "With the quick profile's two repeats no difference can be significant (the smallest possible p is "
               "0.5): the table shows the mechanics, the `paper` profile's repeats give the answer."),
        ("code", "tests = strategies.against_reference(frame)\ndisplay(tests.round(3))"),
        ("md", "## The answer in words"),
        ("code", "print(strategies.verdict(frame, best, tests))"),
        ("md", "## Do the stored results still come out of the code?\nOne stored run of each strategy (LoRA at "
               "rank 4) at the middle cut point and the smallest fraction, and one baseline, trained again from "
               "scratch; a value within 0.01 of the stored one (float rounding differs between kinds of CPU) prints "
               "as stored."),
        ("code", "middle = grid.cut_points[len(grid.cut_points) // 2]\n"
                 "rechecked = {m: plans[m] for m in ['progressive', 'discriminative', 'lora_r4', 'ia3', 'bitfit'] if m in plans}\n"
                 "study.recheck_table(chosen, rechecked, cut_point=middle, percentage=grid.percentages[0], device=device)"),
    ]


ADAPTATION_MODES = ["source_only", "adabn", "dann", "coral", "distill"]


def _adaptation(folder: str) -> list:
    return [
        ("md", f"# {folder}: what are unlabelled target images and a teacher worth?\n"
               "The other notebooks transfer with labelled target images. Here the target's training images come "
               "without labels (the source's keep theirs), at the same fractions the study uses:\n\n"
               "- **source only**: the source network, classifier included, tested on the target as it is;\n"
               "- **AdaBN**: its BatchNorm statistics of blocks 0..k-1 estimated again on the target images, no "
               "training;\n"
               "- **DANN**: training on with a domain classifier on the features at cut k behind a gradient-reversal "
               "layer, its weight ramped up as in Ganin & Lempitsky (2015);\n"
               "- **CORAL**: training on with the distance between source and target feature covariances at cut k "
               "added to the loss (Sun & Saenko 2016).\n\n"
               "These four use the network's BatchNorm variant (`batch_norm = True` in their parameters), pretrained "
               "on the same source. No target label trains them or picks their weights: DANN and CORAL train a fixed "
               "number of epochs and keep the last weights. A fifth mode, **distill**, does use the labels: the "
               "quick network cut as in FR learns from a teacher 64 channels wide (the paper's width), pretrained on "
               "the source and fine-tuned whole on the same labelled subset."),
        ("code", _parameters(folder, modes=ADAPTATION_MODES + ["FR"]) +
         "\nheadline_cut = None  # None: the last block's output, where DANN and Deep CORAL align features\n"
         "embedded_images = 300  # per domain, in the feature-space pictures"),
        ("code", f"{IMPORTS}\nfrom functions.analysis import adaptation\n{PLAN}\n"
                 "headline_cut = headline_cut or cfg.depth\n"
                 "display(study.parameter_table(plans['dann'][1], plans['dann'][2]))"),
        ("md", "## Sweeps\nResults files are resumed: runs already in them are not trained again (`make adaptation` "
               "made them). A cut point is where an alignment sits (after block k-1) or up to which AdaBN re-estimates "
               "statistics; source only has no cut (shown as 0)."),
        ("code", "# NBVAL_IGNORE_OUTPUT\n# (progress bars show rates and times)\n"
                 "paths = {mode: study.run_sweep(*plans[mode], device=device) for mode in modes}\n"
                 "records = {mode: study.sweep_records(chosen, mode, grid.profile)[0] for mode in modes}\n"
                 "baselines = study.sweep_records(chosen, 'FR', grid.profile)[1]"),
        ("md", "## Every cut point\nMean target test accuracy per method and cut point (columns: the fraction of "
               "target training images the method saw)."),
        ("code", "display(adaptation.per_cut({m: records[m] for m in adaptation.UNSUPERVISED}).round(3))"),
        ("md", "## What the unlabelled images are worth in labelled ones\nEach method at the headline cut (source "
               "only and AdaBN: the whole network) against the labelled curves: the baseline trained from scratch and "
               "FR at its best cut, both on the same fractions with labels. *Worth* is the labelled fraction (and "
               "number of images) at which FR reaches the method's accuracy, log-linear between measured fractions; "
               "`<` means below the smallest fraction measured. When source and target classes mean different things "
               "(digits against clothing), the source classifier's outputs are arbitrary on the target and every "
               "unsupervised method stays near chance: adaptation aligns features, it cannot learn which class is "
               "which."),
        ("code", "task = cfg.target_task()\n"
                 "table = adaptation.comparison(records, records['FR'], baselines, headline_cut, len(task.train), task.num_classes)\n"
                 "display(table.round(3))\n"
                 "figure = adaptation.comparison_figure(records, records['FR'], baselines, headline_cut)\n"
                 "plots.save_figure(figure, folder, f'adaptation_{setup}')\ndisplay(figure)"),
        ("md", "## Distillation: how small can the network be?\nPer fraction, the teacher, the quick network trained "
               "alone (FR) and the same network distilled from the teacher, each student at its best cut; parameters "
               "and the milliseconds per test image that the sweep measured on its machine. Below, distilled minus "
               "alone at every cut point: positive where the teacher's soft labels helped."),
        ("code", "display(adaptation.distillation_table(records['distill'], records['FR']).round(4))\n"
                 "display(adaptation.distillation_gain(records['distill'], records['FR']).round(3))"),
        ("md", "## The feature space before and after adaptation\nt-SNE of the features at the headline cut for "
               "test images of both domains (colour: class; o: source, x: target), from the source network and from "
               "the stored DANN run (repeat 0) of the smallest fraction, trained again here with its seeds. Adaptation "
               "that works draws the two domains' points together; it helps the target only when the classes meet "
               "their own kind."),
        ("code", "# NBVAL_IGNORE_OUTPUT\n# (t-SNE's layout moves with float rounding between kinds of CPU)\n"
                 "features, labels, dann_check, dann_float32 = study.adaptation_features(chosen, plans['dann'][1], "
                 "headline_cut, grid.percentages[0], embedded_images, device=device)\n"
                 "print(dann_float32)\n"
                 "figure = adaptation.embedding_figure(adaptation.embedding(features, labels))\n"
                 "plots.save_figure(figure, folder, f'adaptation_features_{setup}')\ndisplay(figure)"),
        ("md", "## Do the stored results still come out of the code?\nThe DANN run just trained again for the "
               "picture, and one stored run of distillation at the middle cut and the smallest fraction, beside "
               "their stored test accuracies. Distillation is stable under float rounding: a value within 0.01 of "
               "the stored one (rounding differs between kinds of CPU) prints as stored. DANN is not: its float32 "
               "run ends far apart on different CPUs (the line above the picture gives this CPU's), so its first "
               "100 optimiser steps are trained again in float64 with deterministic algorithms and compared with "
               "the stored steps, which every CPU reproduces to about 1e-11 and a change to the method does not."),
        ("code", "display(dann_check)\ndistill_cuts = plans['distill'][2].cut_points\n"
                 "study.recheck_table(chosen, {'distill': plans['distill']}, cut_point=distill_cuts[len(distill_cuts) // 2], "
                 "percentage=grid.percentages[0], device=device, baseline=False)"),
    ]


def _reproduction() -> list:
    return [
        ("md", "# Does the upstream study's answer hold here?\n"
               "The upstream study trained its network (64 channels, batches of 4,096, up to 40 epochs) at 0.1%, 1%, "
               "10%, 50% and 100% of the target data and published, per fraction and cut point, the mean test "
               "accuracy of mode FR (for FashionMNIST also of F and FT). This notebook sets our `range` profile's "
               "results (`make range`) beside those tables, for every folder where both exist. Two differences to keep in mind while reading:\n\n"
               "- **Network and budget.** Ours is the quick network (16 channels, batches of 64, at most 10 epochs, "
               "early stopping after 3 without improvement), and every epoch makes at least 100 optimiser steps. "
               "Upstream's batches of 4,096 give a run on 10% of MNIST 5-9 (2,645 images) a single optimiser step "
               "per epoch, so its small-data runs, the baseline first, stop far from convergence.\n"
               "- **Evaluation split.** Upstream's \"test\" accuracy was measured on the training split of the target "
               "classes (the images the subsets were drawn from); ours on the official test split."),
        ("code", 'profile = "range"  # whose results are set beside the upstream tables\n'
                 "output_root = None  # None: $TRANSFER_OUTPUT_ROOT, else this repository's study folders"),
        ("code", "%matplotlib inline\nfrom IPython.display import display\nfrom functions.analysis import plots, "
                 "reproduction\nfrom functions.notebooks import study\n"
                 "study.use_output_root(output_root)\ntables = study.reproduction(profile)\n"
                 "print('compared:', ', '.join(f'{f} {s} {m}' for f, s, m in tables))"),
        ("md", "## Per folder and fraction of data\nFor each study: the baseline's mean test accuracy, the best cut "
               "point (highest mean), its gain over the baseline, and the spread between the cut points' means (best "
               "minus worst). A positive gain means the transferred layers help at that fraction."),
        ("code", "for (folder, setup, mode), table in tables.items():\n"
                 "    print(f'{folder} {setup}, mode {mode}')\n"
                 "    display(table.round(3))"),
        ("md", "## The same, drawn\nTop: the baselines. Bottom: the best cut point's gain over its own study's "
               "baseline. Where the blue line (ours) sits below the orange one (upstream) at small fractions, part of "
               "upstream's gain came from a baseline that had not finished training."),
        ("code", "figure = plots.reproduction_figure(tables)\n"
                 "plots.save_figure(figure, '.', f'reproduction_{profile}')\ndisplay(figure)"),
        ("md", "## Which findings hold?\nTwo findings carry the upstream study: transfer helps most with the least "
               "data, and with all the data it stops helping. Each is tested per folder and study, with a margin of "
               "one point of accuracy."),
        ("code", "import pandas as pd\n"
                 "verdicts = {(f'{f} {s} {m}', study_name): v for (f, s, m), table in tables.items()\n"
                 "            for study_name, v in reproduction.findings(table).items()}\n"
                 "pd.DataFrame.from_dict(verdicts, orient='index')"),
        ("code", "for key, table in tables.items():\n"
                 "    print(reproduction.findings_text(key, table))"),
        ("md", "## Why they differ\n"
               "Read on the tables above:\n\n"
               "- **Upstream's baselines were starved.** From 1% to 50% of the data its baseline sits far below ours "
               "(MNIST: 0.813 against 0.938 at 1%, 0.795 against 0.978 at 10%), and at 10% below its own 1% value: "
               "with batches of 4,096, a run on 2,645 images makes one optimiser step per epoch and early stopping "
               "ends it long before it converges. Pretrained blocks start from useful features and need fewer steps, "
               "so upstream's large gains at 1-50% (MNIST +0.12 to +0.17) measure mostly how far its baseline was from "
               "convergence. With every epoch making at least 100 steps, our baselines converge and the gains that "
               "remain (MNIST +0.016 at 1%, +0.005 at 10%) are what transfer is worth there.\n"
               "- **With the least data both studies agree.** At 0.1% (25 images of MNIST 5-9, 15 of FashionMNIST's "
               "three classes) the best cut gains +0.13 on MNIST here and +0.16 upstream, +0.05 and +0.07 on "
               "FashionMNIST: transferred features help most where the data cannot teach them.\n"
               "- **Where to cut moves with the data.** Upstream's best cut is 4 at every small fraction. Here it moves "
               "from the deepest cuts at the smallest fractions (MNIST: 6 at 0.1%, 5 at 1%) towards shallower ones as "
               "data grows, and with all the data the cut points end within 0.01 (MNIST) to 0.02 (FashionMNIST) of "
               "each other, the last (cut 6, only the head trained) the worst.\n"
               "- **Across datasets transfer is worth less, and a deep cut costs more.** With 0.1% of the data the best "
               "cut gains +0.011 from MNIST to FashionMNIST here (+0.034 upstream), within the spread of the repeats "
               "(standard deviation about 0.03), and +0.068 from FashionMNIST to MNIST (+0.117 upstream): less than "
               "within one dataset (MNIST +0.133), and in both studies FashionMNIST's features carry over to MNIST "
               "better than the reverse. With all the data the cross-dataset cut points end furthest apart (0.066 "
               "and 0.042 here, 0.045 in both folders upstream): every frozen layer learnt on the other dataset costs "
               "accuracy that the target data would have bought, cut 6 the most (from MNIST to FashionMNIST 0.827 "
               "against the baseline's 0.892).\n"
               "- **The other modes (FashionMNIST, F and FT).** Fine-tuning the layers after the cut (F) behaves "
               "like re-initialising them: +0.057 at 0.1% here (+0.065 upstream), +0.003 with all the data (+0.013 "
               "upstream). Keeping only the pretrained blocks before the cut and a new head (FT) gains the most with "
               "the least data here (+0.087 at 0.1%, cut 3; upstream +0.055, cut 5), and with all the data every "
               "truncated network ends below our baseline (the best by 0.004). Upstream's full-data gains of +0.013 "
               "in all three modes stand on one baseline that reached 0.947 against our 0.965: they again measure "
               "a baseline short of convergence.\n"
               "- **The network.** The quick network has 16 channels where upstream's has 64; with all the data both "
               "baselines reach the same accuracy on MNIST (0.989 here, 0.991 upstream), so the narrower network "
               "does not explain the differences above.\n"
               "- **The evaluation split.** Upstream's accuracy at 100% includes the images its runs trained on, so it "
               "is not a held-out accuracy; ours is. That matters at full data, not at the small fractions, where "
               "nearly every image upstream evaluated on was unseen by the run."),
    ]


def _model_zoo() -> list:
    return [
        ("md", "# Which pretrained model for my task?\n"
               "A zoo of pretrained models (three ImageNet EfficientNet-Lite networks and study CNNs of depths 2-8 and "
               "widths 8-64 pretrained on MNIST, FashionMNIST and their class subsets) meets a bank of target tasks "
               "(class subsets of MNIST, FashionMNIST and the 8 x 8 digits, 2 to 10 classes, 20 to 2,000 training "
               "images). For every (model, task) pair the records hold the measured transferability (test accuracy of "
               "a new linear head on the frozen features, averaged over training draws) and every transferability "
               "score computed before any training. `python -m functions zoo build` (`make zoo`) measures them."),
        ("code", 'recommender = "gradient boosting"  # the learned recommender; or "linear regression", a score\n'
                 'example_task = "digits:1,2,3,4,7:200"  # <dataset>:<classes>:<n> (a task of the bank: measured too)\n'
                 "output_root = None  # None: $TRANSFER_OUTPUT_ROOT, else this repository"),
        ("code", "%matplotlib inline\nfrom IPython.display import display\nfrom functions.analysis.model_zoo import "
                 "files, recommenders\nfrom functions.analysis import plots\nfrom functions.notebooks import study, "
                 "zoo\nstudy.use_output_root(output_root)\nrecords = files.load_records()\n"
                 "print(f\"{records['model'].nunique()} models x {records['task'].nunique()} tasks = {len(records)} records\")\n"
                 "display(records.drop_duplicates('model')[list(files.MODEL_COLUMNS)].set_index('model'))"),
        ("md", "## The transferability matrix\nEach cell is the linear-probe test accuracy of one model (row) on one "
               "task (column). Tasks are grouped by dataset and, within a dataset, by number of classes and training "
               "size; models by family and pretraining accuracy. Columns that are bright across all rows are easy "
               "tasks; what matters for recommendation is the order of the models within a column."),
        ("code", "figure = files.matrix_figure(records)\nplots.save_figure(figure, 'zoo', 'transferability_matrix')\n"
                 "display(figure)"),
        ("md", "## Recommenders\nEach recommender ranks the models of a task; the ranking is compared with the "
               "measured one by the weighted Kendall tau (disagreements among the best models weigh most), the top-1 "
               "hit rate (the recommended model is a measured best) and the regret (accuracy lost by taking the "
               "recommended model instead of the best). The learned recommenders are trained without the task (leave "
               "one task out) or without its whole dataset (leave one dataset out); scores and the pretraining "
               "accuracy need no training."),
        ("code", "table = zoo.evaluation(records)  # two decimals: float rounding differs between kinds of CPU\n"
                 "display(table.round(2))\nprint(zoo.verdict(table))"),
        ("md", "## Where the learned recommender fails\nIts weighted tau per task, leave one dataset out, "
               "averaged by dataset and number of classes, then the five tasks it ranks worst."),
        ("code", "failures = recommenders.per_task(records, recommender)\n"
                 "display(failures.groupby(['source_dataset', 'num_classes'])[['weighted_tau', 'top1_hit', "
                 "'regret']].mean().round(2))\n"
                 "display(failures.sort_values(['weighted_tau', 'task']).head(5).round(2))"),
        ("md", "## A recommendation\nThe zoo ranked for one task by the recommender trained on every other task "
               "of the bank, with the measured accuracy where the bank holds the task."),
        ("code", "zoo.recommend_model(example_task, recommender).round(3)"),
    ]


def kinds(folder: str) -> list[str]:
    study_kinds = ["empirical", "truncation", "clustering", "visualizations", "transferability"]
    # the sample-efficiency study streams the target data of the folders whose datasets are
    # available offline and whose targets are large enough for its grid
    offline = ["sample_efficiency", "fe_vs_ft"] if folder not in ("CIFAR", "MNIST_to_digits") else []
    return study_kinds + offline + (["strategies"] if folder in STRATEGY_FOLDERS else []) + \
        (["adaptation"] if folder in ADAPTATION_FOLDERS else [])


def cells(folder: str, kind: str) -> list:
    if kind in TOP_LEVEL:
        return TOP_LEVEL[kind]()
    if kind == "empirical":
        return _empirical(folder, ["F", "FR"], "where to cut a pretrained network",
                          "Which pretrained conv layers should we reuse, and should the rest be kept (F) or "
                          "re-initialised (FR)? Each cut point keeps the layers before it, frozen.")
    if kind == "truncation":
        return _empirical(folder, ["FT"], "how many pretrained layers are enough",
                          "Truncation (FT) keeps the pretrained layers before the cut, frozen, and removes the rest: "
                          "the smallest network that still transfers.")
    if kind == "clustering":
        return _clustering(folder)
    if kind == "visualizations":
        return _visualizations(folder)
    if kind == "transferability":
        return _transferability(folder)
    if kind == "sample_efficiency":
        return _sample_efficiency(folder)
    if kind == "fe_vs_ft":
        return _fe_vs_ft(folder)
    if kind == "strategies":
        return _strategies(folder)
    if kind == "adaptation":
        return _adaptation(folder)
    raise ValueError(f"no notebook template {kind!r}")


# notebooks over every folder, at the repository's top level
TOP_LEVEL = {"reproduction": _reproduction, "model_zoo": _model_zoo}


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
    return [(folder, kind) for folder in FOLDERS for kind in kinds(folder)] + [(".", kind) for kind in TOP_LEVEL]


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
