"""What a notebook or the command line asks for, in one call each: a plan, a sweep, a re-check.

Notebooks stay thin by calling these; the command line uses the same functions, so a notebook
and ``python -m functions run`` with the same parameters write the same results files.
"""
from __future__ import annotations

import os

import torch
from pathlib import Path

from ..analysis import stats, transferability
from ..analysis.summary import records_frame, summary_table
from ..config import CUT, FOLDERS, LEGACY_VALUES, SCHEMA_KEY, Config, Grid, Setup, get_setup, profile
from ..core.device import pick_device
from ..core.errors import DataError
from ..core.paths import results_dir
from ..data.catalog import same_percentage
from ..runs.pretrained import load_pretrained, pretrained_info
from ..runs.fe_vs_ft import Settings
from ..runs.fe_vs_ft import run_study as run_fe_vs_ft
from ..runs.store import load_results, results_path
from ..runs.sweep import run_inputs, run_sweep, subset_index, train_group, train_run

# what a notebook needs from the layers below, under one name
__all__ = ["available_modes", "reproduction", "collected_records", "fe_vs_ft", "fine_tuned_model", "load_pretrained", "plan",
           "parameter_table", "pretrained_info", "recheck_run", "recheck_table", "records_frame", "run_sweep", "save_transferability_records",
           "strategy_records", "summary_table", "sweep_records", "training_subset", "transferability_verdict", "use_output_root",
           "validate_scores"]


def plan(folder: str, setup: str | None = None, profile_name: str = "quick", mode: str = "FR",
         percentages=None, repeats=None, cut_points=None, seed: int | None = None,
         overrides: dict | None = None) -> tuple[Setup, Config, Grid]:
    """The setup, config and grid of one experiment: a profile plus single overrides."""
    chosen = get_setup(folder, setup)
    cfg, grid = profile(profile_name, chosen)
    changes = dict(overrides or {})
    if seed is not None:
        changes["generate_dataset_seed"] = int(seed)
    cfg = cfg.replace(**changes).with_mode(mode)
    percentages = tuple(percentages) if percentages else grid.percentages
    if repeats is not None and (isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1):
        raise DataError(f"repeats={repeats!r} must be a positive integer (None: the profile's repeats)")
    counts = {p: repeats if repeats is not None else grid.repeats.get(p, 2) for p in percentages}
    cuts = tuple(cut_points) if cut_points is not None else cfg.default_cuts()
    for c in cuts:
        cfg.check_cut(c)
    return chosen, cfg, Grid(percentages, cuts, counts, profile_name)


def parameter_table(cfg: Config, grid: Grid):
    """The experiment's parameters and grid as one table, for the record at the top of a notebook.

    A parameter added after results files existed is listed when it differs from the value that
    everything before it used (``LEGACY_VALUES``): a quick-profile notebook reads as it did, and a
    range-profile one shows its ``min_steps_per_epoch``."""
    import pandas as pd
    fields = {k: v for k, v in cfg.params().items()
              if k != SCHEMA_KEY and not (k in LEGACY_VALUES and v == LEGACY_VALUES[k])}
    rows = {**fields, "mode": cfg.mode, "percentages": list(grid.percentages),
            "repeats": [grid.repeats_for(p) for p in grid.percentages], "cut_points": list(grid.cut_points)}
    return pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows))


def reproduction(profile: str = "range", log=print) -> dict:
    """(folder, setup, mode) -> our results beside the upstream study's, per percentage (see
    :func:`functions.analysis.reproduction.side_by_side`), for every upstream table whose sweep of
    ``profile`` is complete (a sweep still running would move the best cut points); the others
    are named through ``log``."""
    from ..analysis import reproduction as compare
    tables = {}
    for folder, setup_name, mode in compare.UPSTREAM_FILES:
        setup = get_setup(folder, setup_name)
        _, cfg, grid = plan(folder, setup_name, profile, mode)
        results = results_path(folder, "results", setup_name, mode, profile)
        base = results_path(folder, "baselines", setup_name, profile=profile)
        if not results.exists():
            continue
        records, baselines = load_results(results)[1], load_results(base)[1] if base.exists() else []
        missing = missing_runs(grid, records, baselines)
        if missing:
            log(f"{folder} {setup_name} {mode}: {missing} runs of the {profile} profile are still to train "
                f"(`make range` resumes them); left out")
            continue
        ours = compare.our_frame(records, baselines)
        tables[(folder, setup_name, mode)] = compare.side_by_side(ours, compare.upstream_frame(folder, setup_name, mode))
    if not tables:
        raise DataError(f"no complete results of the {profile} profile to compare with the upstream study; "
                        f"run `make range`")
    return tables


def missing_runs(grid: Grid, records: list, baselines: list) -> int:
    """How many runs of ``grid`` (cut points and the baseline) the records lack."""
    from ..data.catalog import percentage_key
    have = {(percentage_key(r["sampled_percentage"]), r["sampled_cut_point"], r["repeat"]) for r in [*records, *baselines]}
    wanted = {(percentage_key(p), c, r) for p in grid.percentages for c in (-1, *grid.cut_points)
              for r in range(grid.repeats_for(p))}
    return len(wanted - have)


def use_output_root(path) -> None:
    """Send results and new source models to ``path``; None keeps the environment's choice
    (``$TRANSFER_OUTPUT_ROOT``, else the repository's study folders), so a test run or a batch
    job can redirect every notebook it executes."""
    if path:
        os.environ["TRANSFER_OUTPUT_ROOT"] = str(Path(path).resolve())


def retrain_stored_run(setup: Setup, cfg: Config, cut_point: int, percentage: float, repeat: int,
                       device: str = "auto", profile: str = "quick") -> tuple:
    """One stored run trained again from scratch: ``(model, result, stored record)``.

    The run's cell (every stored repeat of its cut point and percentage) trains together, as the
    sweep trained it, so on the CPU that wrote the file the accuracy comes back exactly."""
    kind = "baselines" if cut_point == -1 else "results"
    path = results_path(setup.folder, kind, setup.name, cfg.mode, profile)
    stored = {r["repeat"]: r for r in load_results(path)[1]
              if r["sampled_cut_point"] == cut_point and same_percentage(r["sampled_percentage"], percentage)}
    # the engine trains a cell's repeats as one group; a strategy trains its runs one by one
    cell = sorted(stored) if cfg.strategy == CUT or cut_point == -1 else [repeat]
    if repeat not in stored:
        raise DataError(f"{path} has no run at cut {cut_point}, percentage {percentage}, repeat {repeat}")
    task = cfg.target_task()
    source = None if cut_point == -1 else load_pretrained(setup, cfg)
    inputs = run_inputs(cfg, task, source, max(cut_point, 0), pick_device(device))
    trained = train_group(cfg, task, source, cut_point, [(percentage, r) for r in cell], inputs)
    model, result = trained[cell.index(repeat)]
    return model, result, stored[repeat]


def recheck_run(setup: Setup, cfg: Config, cut_point: int, percentage: float, repeat: int,
                tolerance: float = 0.01, device: str = "auto", profile: str = "quick") -> dict:
    """Train one stored run again from scratch and compare its test accuracy with the file's.

    Results files are resumed, so a notebook re-run reads them instead of retraining; this
    check makes a code change that alters results visible all the same.
    """
    _, result, stored = retrain_stored_run(setup, cfg, cut_point, percentage, repeat, device, profile)
    return _checked(cut_point, percentage, repeat, stored["test_acc"], result.test_acc, tolerance)


def _checked(cut_point: int, percentage: float, repeat: int, stored_acc: float, test_acc: float,
             tolerance: float) -> dict:
    return {"cut_point": cut_point, "percentage": percentage, "repeat": repeat,
            "stored_test_acc": stored_acc, "test_acc": test_acc,
            "reproduced within tolerance": abs(test_acc - stored_acc) <= tolerance}


def shown_check(check: dict) -> dict:
    """A check as a notebook shows it: a value trained again within the tolerance of the stored
    one is shown as the stored value, so that the notebook check passes on any kind of CPU."""
    again = check["stored_test_acc"] if check["reproduced within tolerance"] else check["test_acc"]
    return {"stored test accuracy": f"{check['stored_test_acc']:.3f}", "trained again": f"{again:.3f}"}


def recheck_table(setup: Setup, plans: dict, cut_point: int, percentage: float, repeat: int = 0,
                  tolerance: float = 0.01, device: str = "auto", baseline: bool = True) -> "pd.DataFrame":
    """Runs trained again from scratch beside their stored test accuracies: ``cut_point`` in each
    mode of ``plans`` (mode -> (setup, config, grid)) and, with ``baseline``, the baseline.

    A value trained again within ``tolerance`` of the stored one is shown as the stored value, so
    that a notebook check passes on any kind of CPU (between an AMD Zen 3 and an Intel AVX-512
    machine, float rounding moved the quick profile's runs by up to 0.008); a larger change shows
    the new number.
    """
    import pandas as pd
    configs = [(f"{mode} cut {cut_point}", cfg, cut_point) for mode, (_, cfg, _) in plans.items()]
    _, first, grid = next(iter(plans.values()))
    if baseline:
        configs.append(("baseline", first, -1))
    rows = {}
    for label, cfg, cut in configs:
        rows[label] = shown_check(recheck_run(setup, cfg, cut, percentage, repeat, tolerance, device, grid.profile))
    return pd.DataFrame.from_dict(rows, orient="index")


def fine_tuned_model(setup: Setup, cfg: Config, cut_point: int, percentage: float, repeat: int = 0,
                     device: str = "auto"):
    """The network of one sweep run (same seeds, same subset), trained again to look inside it."""
    task = cfg.target_task()
    source = load_pretrained(setup, cfg)
    inputs = run_inputs(cfg, task, source, cut_point, pick_device(device))
    model, _ = train_run(cfg, task, source, cut_point, percentage, repeat, inputs)
    return model


def adaptation_features(setup: Setup, cfg: Config, cut_point: int, percentage: float, count: int,
                        tolerance: float = 0.01, device: str = "auto", profile: str = "quick") -> tuple:
    """Features at ``cut_point`` (as they are aligned) of ``count`` test images per domain, from
    the source network and from the stored ``cfg`` run (repeat 0) at ``percentage`` trained again:
    ``({(model, domain): array}, {(model, domain): labels}, check)``, where ``check`` sets the run's
    test accuracy trained again beside the stored one (as :func:`recheck_table` shows it)."""
    import pandas as pd
    from ..train.adaptation import aligned_features
    adapted, result, stored = retrain_stored_run(setup, cfg, cut_point, percentage, 0, device, profile)
    check = _checked(cut_point, percentage, 0, stored["test_acc"], result.test_acc, tolerance)
    networks = {"before: the source network": load_pretrained(setup, cfg), f"after: {cfg.mode}": adapted}
    generator = torch.Generator().manual_seed(cfg.generate_dataset_seed)
    splits = {}
    for domain, task in (("source", cfg.source_task()), ("target", cfg.target_task())):
        splits[domain] = task.test.subset(torch.randperm(len(task.test), generator=generator)[:count])
    features, labels = {}, {}
    with torch.no_grad():
        for name, model in networks.items():
            model = model.cpu().eval()
            for domain, split in splits.items():
                features[(name, domain)] = aligned_features(model.features(split.x, 0, cut_point)).numpy()
                labels[(name, domain)] = split.y.numpy()
    shown = pd.DataFrame.from_dict({f"{cfg.mode} cut {cut_point}": shown_check(check)}, orient="index")
    return features, labels, shown


def sweep_records(setup: Setup, mode: str, profile: str = "quick") -> tuple[list, list]:
    """(cut-point records of ``mode``, baseline records) from the setup's results files of ``profile``."""
    results = results_path(setup.folder, "results", setup.name, mode, profile)
    baselines = results_path(setup.folder, "baselines", setup.name, profile=profile)
    for path in (results, baselines):
        if not path.exists():
            raise DataError(f"no results file {path}; run the folder's empirical notebook or `python -m functions "
                            f"run {setup.folder} --setup {setup.name} --mode {mode} --profile {profile}`")
    return load_results(results)[1], load_results(baselines)[1]


def strategy_records(setup: Setup, plans: dict) -> tuple[dict, list, dict]:
    """(records per mode, baseline records, trainable parameters per mode and cut) of the modes in
    ``plans`` (mode -> (setup, config, grid)); counts for modes whose records lack them (F, FR, FT)
    come from the networks the sweep builds."""
    from ..models.study_cnn import cut
    records, trainable, baselines = {}, {}, None
    for mode, (_, cfg, grid) in plans.items():
        records[mode], baselines = sweep_records(setup, mode, grid.profile)
        if cfg.strategy == CUT:
            source, classes = load_pretrained(setup, cfg), len(cfg.fine_tune_classes)
            trainable[mode] = {c: sum(p.numel() for p in cut(source, c, cfg, classes, 0).parameters() if p.requires_grad)
                               for c in grid.cut_points}
    return records, baselines, trainable


def available_modes(setup: Setup, profile: str = "quick") -> list[str]:
    return [m for m in ("F", "FR", "FT") if results_path(setup.folder, "results", setup.name, m, profile).exists()]


def training_subset(cfg: Config, task, percentage: float, repeat: int):
    """The target training images of one (percentage, repeat): what that sweep run trained on."""
    return task.train.subset(subset_index(cfg, task, percentage, repeat))


def validate_scores(scores: dict, records: list) -> "pd.DataFrame":
    """Transferability scores (percentage -> per-cut table) against the sweep, per percentage; a
    top cut counts as right when no cut is significantly better (paired Wilcoxon, Holm)."""
    import pandas as pd
    groups = stats.best_groups(records)
    tolerance = {p: set(g.loc[g.same_as_best, "sampled_cut_point"]) for p, g in groups.groupby("sampled_percentage")}
    # scores equal in exact arithmetic (the plain H-score saturates at C - 1 when there are fewer
    # images than dimensions) differ in their last bits with the thread count: rounding makes
    # them ties, so the ranking does not depend on the machine
    return pd.concat([transferability.validate_against_sweeps(
        table.round(6), [r for r in records if same_percentage(r["sampled_percentage"], p)], tolerance)
        for p, table in scores.items()], ignore_index=True)


def transferability_verdict(validation) -> str:
    """One line per percentage: the score that ranked the cut points best and whether it found the best cut."""
    import pandas as pd
    lines = []
    for percentage, rows in validation.dropna(subset=["kendall_tau"]).groupby("percentage"):
        best = rows.sort_values("kendall_tau", ascending=False, kind="stable").iloc[0]
        if pd.isna(best["score_top_cut"]):
            top = "it ties several cut points at the top, so it names no best cut"
        else:
            top = (f"its top cut {best['score_top_cut']} {'found' if best['top_cut_ok'] else 'missed'} "
                   f"the measured best cut {best['best_cut']}")
        lines.append(f"{percentage:g} of the data: {best['score']} ranks the cut points best (Kendall tau "
                     f"{best['kendall_tau']:.2f}); {top}; {int(rows['top_cut_ok'].sum())} of {len(rows)} scores "
                     f"found the best cut or one not significantly worse.")
    return "\n".join(lines) or "no score varies over the cut points"


def records_path(setup: Setup, mode: str, profile: str = "quick") -> Path:
    return results_dir(setup.folder, profile) / f"transferability_records_{setup.name}_{mode}.csv"


def save_transferability_records(setup: Setup, cfg: Config, scores: dict, records: list, model, task,
                                 profile: str = "quick") -> Path:
    """The folder's rows of the recommender's records (model and target metadata, scores, measured
    accuracy per cut and percentage), written beside its results files for
    ``python -m functions recommend`` to collect; one row per scored percentage (a sweep may hold
    more fractions than were scored)."""
    records = [r for r in records if any(same_percentage(r["sampled_percentage"], p) for p in scores)]
    frame = transferability.build_records(scores, records, setup=setup, cfg=cfg, model=model,
                                          n_target_train=len(task.train),
                                          source_test_acc=pretrained_info(setup, cfg)["test_acc"])
    return transferability.save_records(frame.round(6), records_path(setup, cfg.mode, profile))


def collected_records() -> "pd.DataFrame":
    """Every study folder's transferability records under the output root, in one table."""
    import pandas as pd
    paths = sorted(p for folder in FOLDERS for p in results_dir(folder).glob("transferability_records_*.csv"))
    if not paths:
        raise DataError("no transferability records found; execute the folders' transferability notebooks "
                        "(`make notebooks`) first")
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)



def fe_vs_ft(folder: str, setup: str | None, backbone: str, samples_per_class, splits: int, track: bool = True,
             **settings) -> list[dict]:
    """Feature extraction and fine-tuning runs of one backbone over the few-shot grid (resumed
    from the folder's results file; new runs, and the figures of a grid that trained any, are
    logged to MLflow when ``track``); the figures are saved under the folder's figures."""
    from ..analysis.tradeoff import report
    chosen = get_setup(folder, setup)
    study = run_fe_vs_ft(folder, setup, Settings(backbone=backbone, **settings), samples_per_class, splits,
                         track=track, log=lambda *_: None)
    report(study, folder, f"{chosen.name}_{backbone}")
    return study.records
