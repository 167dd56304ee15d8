# %% [markdown]
# # {{folder}}: what are unlabelled {{data}} images worth to an ImageNet network trained on {{source}}?
# EfficientNet-Lite0, pretrained on ImageNet, is transferred to the `{{source}}` images as the cut-point study's mode **F** trains it (first k stages frozen with their ImageNet statistics, the later stages and a new head fine-tuned on every labelled training image, the epoch chosen on the `{{source}}` validation images). The `{{data}}` images share the classes but not the look. Their training images come without labels:
#
# - **source only**: the `{{source}}` network tested on the `{{data}}` test images as it is;
# - **AdaBN**: the BatchNorm statistics of the stages that trained estimated again on the `{{data}}` images, no training;
# - **DANN**: training on with a domain classifier on the pooled features the classifier reads, behind a gradient-reversal layer whose weight ramps up as in Ganin & Lempitsky (2015);
# - **CORAL**: training on with the distance between the two domains' feature covariances added to the loss (Sun & Saenko 2016);
# - **MCC**: training on with the classifier's confusion between classes on the `{{data}}` images added to the loss (Minimum Class Confusion, Jin et al. 2020), no domain classifier;
# - **CDAN**: DANN's domain classifier reading the features multiplied by the class predictions, each image weighted by the certainty of its prediction (CDAN+E, Long et al. 2018).
#
# No `{{data}}` label trains a method or picks its settings: DANN, CORAL, MCC and CDAN train a fixed schedule at each of two weights and keep the one with the lower target risk estimated by deep embedded validation (You et al. 2019: the source's validation loss, each image weighted by how target-like a domain classifier finds its features). Their `-tuned` forms (`tuned_methods`) choose the learning rate the same way among 0.0003, 0.001 and 0.003 (DANN also its reversal weight ramped up or constant from the first step), at the cut point whose source models score best on the `{{source}}` validation images. The same network fine-tuned on a few labelled `{{data}}` images per class (the cut-point study on `{{data}}`, in this folder) says what the unlabelled images are worth in labelled ones.

# %%
{{parameters}}

# %%
from IPython.display import display
from functions.analysis import adaptation, plots, stats
from functions.notebooks import backbone, backbone_adaptation as study
from functions.notebooks.study import use_output_root
use_output_root(output_root)
adapted = study.adaptation_study(source, data, backbone_name, methods, folder)
labelled = backbone.studies(data, backbone_name, [labelled_mode], folder)[labelled_mode]
labelled_grid = backbone.grids({labelled_mode: labelled}, per_class, fractions, None, labelled_repeats)[labelled_mode]
print(f"{source}: {len(adapted.source.train)} training, {len(adapted.source.val)} validation, {len(adapted.source.test)} "
      f"test images; {data}: {len(adapted.target.train)} training images (unlabelled here) and "
      f"{len(adapted.target.test)} test images; {len(adapted.classes)} classes at {adapted.backbone.input_size} px")

# %% [markdown]
# ## Sweeps
# Results files are resumed: runs already in them are not trained again (`make real` trains them; see the README for its time).

# %%
# NBVAL_IGNORE_OUTPUT: progress bars show rates and times
adapted.run(cut_points, repeats, progress=False)
tuned = study.adaptation_study(source, data, backbone_name, tuned_methods, folder)
tuned_cut = study.chosen_cut(adapted)
tuned.run([tuned_cut], repeats, progress=False)
labelled.run(labelled_grid, progress=False)
runs = {**study.records(adapted, cut_points, repeats), **study.records(tuned, [tuned_cut], repeats)}

# %% [markdown]
# ## Every method at each cut point
# Mean ± standard deviation of test accuracy on the `{{data}}` test images over repeats; each repeat trains its own source model, which every method of that repeat starts from. The `-tuned` methods run at one cut point only (the line below says which and why).

# %%
print(study.tuned_cut_line(adapted, tuned_cut))
display(study.summary(adapted, runs))

# %% [markdown]
# ## Does adapting help, beyond what a seed can undo?
# Each method against source only at the same cut point, paired by repeat: the mean difference in test accuracy with a 95% bootstrap interval, the exact Wilcoxon p Holm-corrected over the methods of its family (those at one learning rate, and those whose rate was chosen: two questions, each corrected for its own tests) at a cut point, each method's standard deviation over repeats (a gain below it is one that another seed can undo, and the sentences call it that) and the repeats a power calculation from the measured spread asks for. The sentences are written from the numbers. Then what the `-tuned` runs chose by the target risk estimate: each candidate with the number of runs that chose it.

# %%
gains = study.against_source_only(runs)
print(study.verdict(adapted, gains))
display(stats.shown_tests(gains).round(3))
display(adaptation.chosen_alignment_settings({m: runs[m] for m in tuned_methods}))

# %% [markdown]
# ## What the unlabelled images are worth in labelled ones
# The labelled curves: the network fine-tuned in mode {{labelled_mode}} on 1, 2 and 5 labelled `{{data}}` images per class and on all of them (at the cut its validation accuracy picks at each size), and the baseline trained from its random initialisation on the same images. *Worth* is the labelled share of the training images (and number of images) at which the {{labelled_mode}} curve reaches a method's accuracy, log-linear between measured sizes; `<` means below the smallest size measured, `>` above the largest.

# %%
display(study.worth(adapted, runs, labelled, labelled_grid).round(3))
for cut in cut_points:
    figure = study.worth_figure(adapted, runs, labelled, labelled_grid, cut,
                                f"{folder}: {data} test accuracy, unlabelled (dashed, cut {cut}) or labelled (solid)")
    plots.save_figure(figure, folder, f"adaptation_{backbone_name}_cut{cut}", "real")
    display(figure)

# %% [markdown]
# ## Do the stored results still come out of the code?
# Source only and AdaBN at the last cut point, repeat 0, trained again from scratch (the source model included) beside their stored test accuracy; a value within 0.01 (the float rounding between kinds of CPU) is printed as the stored one. The methods that train on (DANN, CORAL, MCC, CDAN) are left out: their float32 runs end elsewhere on each kind of CPU.

# %%
display(study.recheck_table(adapted, cut_point=max(cut_points)))
