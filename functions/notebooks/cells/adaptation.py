# %% [markdown]
# # {{folder}}: what are unlabelled target images and a teacher worth?
# The other notebooks transfer with labelled target images. Here the target's training images come without labels (the source's keep theirs), at the same fractions the study uses:
#
# - **source only**: the source network, classifier included, tested on the target as it is;
# - **AdaBN**: its BatchNorm statistics of blocks 0..k-1 estimated again on the target images, no training;
# - **DANN**: training on with a domain classifier on the features at cut k behind a gradient-reversal layer, its weight ramped up as in Ganin & Lempitsky (2015);
# - **CORAL**: training on with the distance between source and target feature covariances at cut k added to the loss (Sun & Saenko 2016);
# - **MCC** (where `modes` lists it): training on with the target batch's class confusion added to the loss: its predictions at temperature 2.5, weighted towards the confident ones, should not put two classes on the same images (Jin et al. 2020; no critic, and its term is on the output, so its cut only seeds the run);
# - **CDAN** (where `modes` lists it): DANN's critic and ramp, but the critic sees the features at cut k multiplied with the classifier's predictions, each image weighted by how confident its prediction is (Long et al. 2018, CDAN+E), so the classes are aligned, not only the domains.
#
# MCC and CDAN run where the two domains' classes are the same (digits to digits): both lean on the source classifier's predictions on the target, which mean nothing where its classes are another dataset's. These methods use the network's BatchNorm variant (`batch_norm = True` in their parameters), pretrained on the same source. No target label trains them or picks their settings: each DANN, CORAL, MCC and CDAN run trains a fixed number of epochs at each of its candidate weights (`dann_weights`, `coral_weights`, `mcc_weights`, `cdan_weights` below) and keeps the one with the lowest target risk estimated by deep embedded validation (You et al. 2019: the source's validation loss, each image weighted by how target-like a domain classifier finds its features). A fifth mode, **distill**, does use the labels: the quick network cut as in FR learns from a teacher 64 channels wide (the paper's width), pretrained on the source and fine-tuned whole on the same labelled subset; each run tries every temperature and share of `kd_temperatures` x `kd_alphas` and keeps the pair with the best validation accuracy. The modes of `tuned_modes` also run as `<mode>-tuned` at the headline cut (`tuned_repeats` repeats at each of `tuned_percentages`): each run trains at every candidate weight and at the learning rates 0.0003, 0.001 and 0.003 (DANN also with its reversal weight ramped up or constant from the first step, `dann_schedules`), and the same target risk estimate picks the combination, so the rate and schedule too are chosen without a target label. Where source and target classes mean different things (digits against clothing), `settings` empties `dann_weights` and `coral_weights`: DANN and CORAL then train at the papers' single weight (`dann_weight`, `coral_weight`), since no weight can tell which class is which.

# %%
{{parameters}}
headline_cut = None  # None: the last block's output, where DANN and Deep CORAL align features
embedded_images = 300  # per domain, in the feature-space pictures

# %%
# %matplotlib inline
from IPython.display import display
from functions.analysis import plots, stats
from functions.notebooks import study
from functions.analysis import adaptation
study.use_output_root(output_root)
plans = {mode: study.plan(folder, setup, profile, mode, percentages, repeats, cut_points, seed, overrides=settings)
         for mode in modes}
chosen, cfg, grid = plans[modes[0]]
display(study.parameter_table(cfg, grid))
headline_cut = headline_cut or cfg.depth
display(study.parameter_table(plans['dann'][1], plans['dann'][2]))
plans.update({f'{mode}-tuned': study.plan(folder, setup, profile, f'{mode}-tuned', tuned_percentages, tuned_repeats,
                                          [headline_cut], seed, overrides=settings) for mode in tuned_modes})

# %% [markdown]
# ## Sweeps
# Results files are resumed: runs already in them are not trained again (`make adaptation` made them). A cut point is where an alignment sits (after block k-1) or up to which AdaBN re-estimates statistics; source only has no cut (shown as 0).

# %%
# NBVAL_IGNORE_OUTPUT
# (progress bars show rates and times)
paths = {mode: study.run_sweep(*plans[mode], device=device) for mode in plans}
records = {mode: study.sweep_records(chosen, mode, grid.profile)[0] for mode in plans}
baselines = study.sweep_records(chosen, 'FR', grid.profile)[1]

# %% [markdown]
# ## Every cut point
# Mean target test accuracy per method and cut point (columns: the fraction of target training images the method saw).

# %%
display(adaptation.per_cut({m: records[m] for m in adaptation.UNSUPERVISED if m in records}).round(3))

# %% [markdown]
# ## What the unlabelled images are worth in labelled ones
# Each method at the headline cut (source only and AdaBN: the whole network) against the labelled curves (bars: one standard deviation over repeats; dotted: chance): the baseline trained from scratch and FR at the cut its validation accuracy picks, both on the same fractions with labels. *Worth* is the labelled fraction (and number of images) at which FR reaches the method's accuracy, log-linear between measured fractions; `<` means below the smallest fraction measured. When source and target classes mean different things (digits against clothing), the source classifier's outputs are arbitrary on the target and every unsupervised method stays near chance: adaptation aligns features, it cannot learn which class is which.

# %%
task = cfg.target_task()
table = adaptation.comparison(records, records['FR'], baselines, headline_cut, len(task.train), task.num_classes)
display(table.round(3))
figure = adaptation.comparison_figure(records, records['FR'], baselines, headline_cut, task.num_classes,
                                      f'{folder}: unlabelled (dashed) or labelled (solid) target images, {profile} profile')
plots.save_figure(figure, folder, f'adaptation_{setup}')
display(figure)

# %% [markdown]
# ## Does adapting help, beyond what a seed can undo?
# Each method at its headline cut against the source network tested as it is, runs paired by repeat (each repeat adapts to its own subset of unlabelled target images): the mean difference in target test accuracy with a 95% bootstrap interval, the exact Wilcoxon p Holm-corrected over the methods of its family (those at the study's one learning rate, and those whose rate was chosen; two questions, each corrected for its own tests) at each fraction, each method's standard deviation over repeats (a gain below it is one that another seed can undo, and the sentences call it that) and the repeats a power calculation from the measured spread asks for. Where no method differs significantly the p values are left out of the table, and the sentences say why. Then what the runs chose by the target risk estimate: each candidate setting with the number of runs that chose it, per method and fraction.

# %%
gains = adaptation.against_source_only(records, headline_cut)
print(adaptation.adaptation_verdict(gains))
display(stats.shown_tests(gains).round(3))
display(adaptation.chosen_alignment_settings({m: records[m] for m in adaptation.UNSUPERVISED if m in records}))

# %% [markdown]
# ## Distillation: how small can the network be?
# Per fraction, the teacher, the quick network trained alone (FR) and the same network distilled from the teacher, each student at the cut its validation accuracy picks; parameters and the milliseconds per test image that the sweep measured on its machine. Then the paired test: the distilled student against the student alone, each at its chosen cut, runs paired by repeat (the same labelled subset and seed; `make adaptation` runs both to 8 repeats there at 1%), with a 95% bootstrap interval and the exact Wilcoxon p Holm-corrected over the fractions. Then how often validation chose each temperature and share, and distilled minus alone at every cut point (positive where the teacher's soft labels helped).

# %%
display(adaptation.distillation_table(records['distill'], records['FR']).round(4))
distillation = adaptation.distillation_against_alone(records['distill'], records['FR'])
print(adaptation.distillation_verdict(distillation))
display(stats.shown_tests(distillation).round(3))
display(adaptation.chosen_distillation_settings(records['distill']))
display(adaptation.distillation_gain(records['distill'], records['FR']).round(3))

# %% [markdown]
# ## The feature space before and after adaptation
# t-SNE of the features at the headline cut for test images of both domains (colour: class; o: source, x: target), from the source network and from the stored DANN run (repeat 0) of the smallest fraction, trained again here in float32 with its seeds (about a minute on one core; the test suite skips this cell, whose picture moves with float rounding between kinds of CPU). Adaptation that works draws the two domains' points together; it helps the target only when the classes meet their own kind.

# %%
# NBVAL_SKIP
features, labels, dann_float32 = study.adaptation_features(chosen, plans['dann'][1], headline_cut, grid.percentages[0], embedded_images, device=device)
print(dann_float32)
figure = adaptation.embedding_figure(adaptation.embedding(features, labels),
                                     f'{folder}: features at cut {headline_cut}, {embedded_images} test images per domain')
plots.save_figure(figure, folder, f'adaptation_features_{setup}')
display(figure)

# %% [markdown]
# ## Does the stored DANN run still come out of the code?
# The DANN run of the picture (at the weight it chose) beside its stored test accuracy. Its float32 run ends far apart on different CPUs (the line above the picture gives this CPU's), so its first 100 optimiser steps are trained again in float64 with deterministic algorithms and compared with the stored steps, which every CPU reproduces to about 1e-11 and a change to the method does not. The stable modes' stored runs, distillation among them, are trained again by the test suite (`tests/runs/test_recheck.py`), under AVX2 kernels that round as another kind of CPU does.

# %%
study.recheck_table(chosen, {'dann': plans['dann']}, cut_point=headline_cut, percentage=grid.percentages[0], device=device, baseline=False)
