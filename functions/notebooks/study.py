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
from ..runs.cut_passes import cut_shapes, pass_per_cut
from ..runs.pretrained import load_pretrained, pretrained_info
from ..runs.recheck import FLOAT32_TOLERANCE, recheck, retrain_stored_run
from ..runs.fe_vs_ft import FeVsFtSettings
from ..runs.fe_vs_ft import run_study as run_fe_vs_ft
from ..runs.store import BASELINE_CUT, load_results, results_path
from ..runs.sweep import run_inputs, run_sweep, subset_index, train_run

# what a notebook needs from the layers below, under one name
__all__ = ["available_modes", "reproduction", "collected_records", "fe_vs_ft", "fine_tuned_model", "load_pretrained", "plan",
           "parameter_table", "pretrained_info", "recheck_run", "recheck_table", "records_frame", "run_sweep", "save_transferability_records",
           "strategy_records", "summary_table", "sweep_records", "training_subset", "transferability_verdict",
           "tuned_sweeps", "use_output_root", "validate_scores"]


def plan(folder: str, setup: str | None = None, profile_name: str = "quick", mode: str = "FR",
         percentages=None, repeats=None, cut_points=None, seed: int | None = None,
         overrides: dict | None = None) -> tuple[Setup, Config, Grid]:
    """The setup, config and grid of one experiment: a profile plus single overrides."""
    chosen = get_setup(folder, setup)
    cfg, grid = profile(profile_name, chosen)
    changes = dict(overrides or {})
    if seed is not None:
        changes["generate_dataset_seed"] = int(seed)
    cfg = cfg.with_mode(mode).replace(**changes)  # an override wins over what the mode sets
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
    everything before it used (``LEGACY_VALUES``): ``min_steps_per_epoch`` shows, ``precision``
    does not unless a run asks for bf16."""
    import pandas as pd
    fields = {k: v for k, v in cfg.params().items()
              if k != SCHEMA_KEY and not (k in LEGACY_VALUES and v == LEGACY_VALUES[k])}
    rows = {**fields, "mode": cfg.mode, "percentages": list(grid.percentages),
            "repeats": [grid.repeats_for(p) for p in grid.percentages], "cut_points": list(grid.cut_points)}
    return pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows))


def _complete_sweep(folder: str, setup_name: str, mode: str, profile: str, log) -> tuple | None:
    """(records, baselines) of a folder's sweep of ``profile`` when it is complete (a sweep still
    running would move the best cut points); None, said through ``log`` when it is incomplete."""
    _, _, grid = plan(folder, setup_name, profile, mode)
    results = results_path(folder, "results", setup_name, mode, profile)
    base = results_path(folder, "baselines", setup_name, profile=profile)
    if not results.exists():
        return None
    records, baselines = load_results(results)[1], load_results(base)[1] if base.exists() else []
    missing = missing_runs(grid, records, baselines)
    if missing:
        log(f"{folder} {setup_name} {mode}: {missing} runs of the {profile} profile are still to train "
            f"(`make range` resumes them); left out")
        return None
    return records, baselines


def _image_range(records: list[dict]) -> tuple[int, int]:
    return min(r["n_train"] for r in records), max(r["n_train"] for r in records)


def study_headlines(modes: dict, profile: str = "range", log=print) -> dict:
    """``(small CNN, folder, mode) -> (headline, depth, images)`` of each complete ``profile`` sweep of
    ``modes`` (folder -> modes; the folders' default class setups), for
    :func:`functions.analysis.reproduction.across_networks`."""
    from ..analysis import reproduction as compare
    headlines = {}
    for folder, folder_modes in modes.items():
        for mode in folder_modes:
            setup_name = get_setup(folder, None).name
            complete = _complete_sweep(folder, setup_name, mode, profile, log)
            if complete is not None:
                cfg = plan(folder, setup_name, profile, mode)[1]
                headlines[(compare.SMALL_CNN, folder, mode)] = (compare.headline(compare.our_frame(*complete)),
                                                                cfg.depth, _image_range(complete[0]))
    return headlines


def reproduction(profile: str = "range", log=print) -> dict:
    """(folder, setup, mode) -> our results beside the upstream study's, per percentage (see
    :func:`functions.analysis.reproduction.side_by_side`), for every upstream table whose sweep of
    ``profile`` is complete (a sweep still running would move the best cut points); the others
    are named through ``log``."""
    from ..analysis import reproduction as compare
    tables = {}
    for folder, setup_name, mode in compare.UPSTREAM_FILES:
        complete = _complete_sweep(folder, setup_name, mode, profile, log)
        if complete is None:
            continue
        ours = compare.our_frame(*complete)
        tables[(folder, setup_name, mode)] = compare.side_by_side(ours, compare.upstream_frame(folder, setup_name, mode))
    if not tables:
        raise DataError(f"no complete results of the {profile} profile to compare with the upstream study; "
                        f"run `make range`")
    return tables


def missing_runs(grid: Grid, records: list, baselines: list) -> int:
    """How many runs of ``grid`` (cut points and the baseline) the records lack."""
    from ..data.catalog import percentage_key
    have = {(percentage_key(r["sampled_percentage"]), r["sampled_cut_point"], r["repeat"]) for r in [*records, *baselines]}
    wanted = {(percentage_key(p), c, r) for p in grid.percentages for c in (BASELINE_CUT, *grid.cut_points)
              for r in range(grid.repeats_for(p))}
    return len(wanted - have)


def use_output_root(path) -> None:
    """Send results and new source models to ``path``; None keeps the environment's choice
    (``$TRANSFER_OUTPUT_ROOT``, else the repository's study folders), so a test run or a batch
    job can redirect every notebook it executes."""
    if path:
        os.environ["TRANSFER_OUTPUT_ROOT"] = str(Path(path).resolve())


def recheck_run(setup: Setup, cfg: Config, cut_point: int, percentage: float, repeat: int,
                tolerance: float = FLOAT32_TOLERANCE, device: str = "auto", profile: str = "quick") -> dict:
    """Train one stored run again from scratch and compare it with the file's, in a way that holds
    on any kind of CPU (see :mod:`functions.runs.recheck`).  A chaotic run with stored float64
    steps is decided by them alone, its float32 accuracy not trained for."""
    return recheck(setup, cfg, cut_point, percentage, repeat, tolerance, device, profile, model_wanted=False)[1]


def shown_check(check: dict) -> dict:
    """A check as a notebook shows it, the same on every kind of CPU that reproduces the run: a
    float32 value within the tolerance of the stored one is shown as the stored value; a chaotic
    run's float64 steps are shown as agreeing or not.  A code change shows the new number or the
    step where the run left its stored course."""
    stored = f"{check['stored_test_acc']:.3f}"
    if "first_difference" in check:
        again = f"first {check['steps']} steps in float64 as stored" if check["reproduced"] else \
            f"float64 steps differ from step {check['first_difference']}"
    else:
        again = stored if check["reproduced"] else f"{check['test_acc']:.3f}"
    return {"stored test accuracy": stored, "trained again": again}


def recheck_table(setup: Setup, plans: dict, cut_point: int, percentage: float, repeat: int = 0,
                  tolerance: float = FLOAT32_TOLERANCE, device: str = "auto", baseline: bool = True) -> "pd.DataFrame":
    """Runs trained again from scratch beside their stored test accuracies: ``cut_point`` in each
    mode of ``plans`` (mode -> (setup, config, grid)) and, with ``baseline``, the baseline, each
    shown by :func:`shown_check`.
    """
    import pandas as pd
    configs = [(f"{mode} cut {cut_point}", cfg, cut_point) for mode, (_, cfg, _) in plans.items()]
    _, first, grid = next(iter(plans.values()))
    if baseline:
        configs.append(("baseline", first, BASELINE_CUT))
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
                        device: str = "auto", profile: str = "quick") -> tuple:
    """Features at ``cut_point`` (as they are aligned) of ``count`` test images per domain, from
    the source network and from the stored ``cfg`` run (repeat 0) at ``percentage`` trained again
    in float32: ``({(model, domain): array}, {(model, domain): labels}, float32)``, where
    ``float32`` says the test accuracy this CPU's run reached beside the stored one (a chaotic
    run's lands elsewhere on each CPU: :func:`recheck_table` compares its float64 steps instead)."""
    from ..train.adaptation import aligned_features
    adapted, result, stored = retrain_stored_run(setup, cfg, cut_point, percentage, 0, device, profile)
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
    float32 = f"{cfg.mode} at cut {cut_point} trained again in float32 on this CPU: test accuracy " \
              f"{result.test_acc:.3f} (stored: {stored['test_acc']:.3f})"
    return features, labels, float32


def cut_scores(model, split, *, chunk_size: int = 512, max_dim: int = 4096, progress: bool = True) -> pd.DataFrame:
    """Transferability of ``model``'s features for the target ``split`` at every cut point (one
    row per cut: :class:`~functions.analysis.transferability.CutScores`); the blocks run once per
    chunk of ``chunk_size`` images.  To score one percentage's data, pass ``split.subset(...)``."""
    scores = transferability.CutScores(cut_shapes(model, split.x), split.y, max_dim)
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise DataError(f"chunk_size={chunk_size!r} must be a positive integer")
    return scores.table(pass_per_cut(model, split.x, scores.feed, chunk_size, progress))


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
    ``plans`` (mode -> (setup, config, grid)), only the runs of each plan's grid (its percentages
    and cut points: a file may hold more); counts for modes whose records lack them (F, FR, FT)
    come from the networks the sweep builds."""
    from ..models.study_cnn import cut
    records, trainable, baselines = {}, {}, None
    for mode, (_, cfg, grid) in plans.items():
        found, found_baselines = sweep_records(setup, mode, grid.profile)
        records[mode] = [r for r in found if _in_grid(r, grid) and r["sampled_cut_point"] in grid.cut_points]
        baselines = [r for r in found_baselines if _in_grid(r, grid)]
        if cfg.strategy == CUT:
            source, classes = load_pretrained(setup, cfg), len(cfg.fine_tune_classes)
            trainable[mode] = {c: sum(p.numel() for p in cut(source, c, cfg, classes, 0).parameters() if p.requires_grad)
                               for c in grid.cut_points}
    return records, baselines, trainable


def tuned_plans(plans: dict, best, repeats: int) -> dict:
    """Each mode of ``plans`` (mode -> (setup, config, grid)) as ``<mode>-tuned``, whose every run
    chooses its learning rate on validation: one plan per percentage, at the cut point the mode's
    own runs picked there (``best``, from :func:`functions.analysis.strategies.best_cuts`), with
    ``repeats`` repeats (what `make strategies` runs)."""
    import dataclasses
    from ..config import TUNED_SUFFIX
    tuned = {}
    for mode, (setup, cfg, grid) in plans.items():
        tuned[mode + TUNED_SUFFIX] = [
            (setup, cfg.with_mode(mode + TUNED_SUFFIX),
             dataclasses.replace(grid, percentages=(p,), cut_points=(int(best.loc[(p, mode), "best_cut"]),),
                                 repeats={p: repeats}))
            for p in grid.percentages]
    return tuned


def tuned_sweeps(setup: Setup, plans: dict, best, repeats: int, device=None) -> tuple[dict, dict]:
    """The modes of ``plans`` as ``<mode>-tuned`` at their chosen cuts (:func:`tuned_plans`), their
    sweeps resumed (what `make strategies` ran) and their records read back (:func:`tuned_records`)."""
    tuned = tuned_plans(plans, best, repeats)
    for per_percentage in tuned.values():
        for plan_ in per_percentage:
            run_sweep(*plan_, progress=False, device=device)
    return tuned_records(setup, tuned)


def tuned_records(setup: Setup, tuned: dict) -> tuple[dict, dict]:
    """(records per tuned mode, trainable parameters per tuned mode and cut) of :func:`tuned_plans`'s
    plans, each percentage's runs at its own cut."""
    records, trainable = {}, {}
    for mode, per_percentage in tuned.items():
        for plan_ in per_percentage:
            found, _, counts = strategy_records(setup, {mode: plan_})
            records.setdefault(mode, []).extend(found[mode])
            trainable.setdefault(mode, {}).update(counts.get(mode, {}))
    return records, trainable


def _in_grid(record: dict, grid: Grid) -> bool:
    return any(same_percentage(record["sampled_percentage"], p) for p in grid.percentages)


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
    frames = []
    for path in paths:
        try:
            frames.append(pd.read_csv(path))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else "no text"
            raise DataError(f"{path} is not a readable CSV ({type(err).__name__}: {reason}); re-run the "
                            f"transferability notebook of {path.parent.parent.name}, or delete the file") from None
    return pd.concat(frames, ignore_index=True)



def fe_vs_ft(folder: str, setup: str | None, backbone: str, samples_per_class, splits: int, track: bool = True,
             data=None, **settings) -> list[dict]:
    """Feature extraction and fine-tuning runs of one backbone over the few-shot grid (resumed
    from the folder's results file; new runs, and the figures of a grid that trained any, are
    logged to MLflow when ``track``); the figures are saved under the folder's figures, named as
    the results file is.  ``data``: a user's images as the target (see :func:`run_fe_vs_ft`)."""
    from ..analysis.tradeoff import report
    study = run_fe_vs_ft(folder, setup, FeVsFtSettings(backbone=backbone, **settings), samples_per_class, splits,
                         track=track, log=lambda *_: None, data=data)
    report(study, folder)
    return study.records
