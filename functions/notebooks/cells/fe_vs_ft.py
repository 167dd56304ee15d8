# %% [markdown]
# # {{folder}}: feature extraction or fine-tuning?
# With N labelled images per class, is a frozen pretrained network feeding a classical classifier (**FE**: pooled features, standardised on the training images only, then a linear SVM) good enough, or is fine-tuning (**FT**: a new head, the last stages trained with Adam, early stopping on a fixed validation set) worth its cost? Both run on the same seeded training splits and are scored on the official test split; each run is charged for its time, counted FLOPs, peak memory and energy (codecarbon).

# %%
{{parameters}}

# %%
# %matplotlib inline
from IPython.display import display
from functions.analysis import tradeoff
from functions.notebooks import study
study.use_output_root(output_root)

# %% [markdown]
# ## The runs
# Results files are resumed: runs already in them are not trained again.

# %%
# NBVAL_IGNORE_OUTPUT
# (progress bars show rates and times)
records = {backbone: study.fe_vs_ft(folder, setup, backbone, samples_per_class, splits, track=track,
                                    input_size=input_size, classifier=classifier, frozen=frozen,
                                    data={{data_argument}})
           for backbone in backbones}

# %% [markdown]
# ## Accuracy per pipeline and size
# Mean over splits with the half-width of the 95% confidence interval, the mean per-class accuracy, and the mean cost of one run: training alone (FE: extracting the training and validation features and fitting the classifier; FT: fine-tuning), and with the evaluation of the test split. Energy in watt-hours, as codecarbon measures or estimates it on this machine.

# %%
for backbone, runs in records.items():
    print(backbone)
    display(tradeoff.summary(runs)[['splits', 'test_acc', 'ci95', 'mean_class_acc']].round(3))

# %%
# NBVAL_IGNORE_OUTPUT
# (times and energy differ between machines)
for backbone, runs in records.items():
    print(backbone)
    display(tradeoff.summary(runs)[['training_seconds', 'training_wh', 'training_gflops', 'total_seconds',
                                    'total_wh']].round(3))

# %% [markdown]
# ## Accuracy against labelled images
# This figure and the next are saved under `results/figures/` (and logged to MLflow with the summary when the grid trained new runs). Bands are 95% confidence intervals over the splits. Where the bands of FE and FT overlap, the cheap pipeline is as good as the expensive one.

# %%
for backbone, runs in records.items():
    display(tradeoff.accuracy_curves(runs, title=tradeoff.figure_title({{title}}, backbone)))

# %% [markdown]
# ## Accuracy against cost
# Each point is the mean run of one pipeline at one size (labelled with N). The dashed line joins the Pareto-optimal points: nothing else is both cheaper and more accurate.

# %%
for backbone, runs in records.items():
    display(tradeoff.pareto(runs, title=tradeoff.figure_title({{title}}, backbone)))

# %% [markdown]
# ## The guideline
# FT minus FE test accuracy, paired by split (both trained on the same images): the two are within noise where the 95% interval of the difference holds zero; otherwise the interval says which pipeline is better. Cost ratios compare training alone (the test evaluation is the same forward pass for both).

# %%
# NBVAL_IGNORE_OUTPUT
# (the cost ratios differ between machines)
for backbone, runs in records.items():
    print(backbone)
    print(tradeoff.guideline(runs), end='\n\n')

# %%
for backbone, runs in records.items():
    print(backbone)
    display(tradeoff.paired_differences(runs)[['pairs', 'ft_minus_fe', 'ci95', 'verdict']].round(3))
