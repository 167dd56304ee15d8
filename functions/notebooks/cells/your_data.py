# %% [markdown]
# # Your own images: which network, feature extraction or fine-tuning?
# Point `data` at a folder of images (`root/<label>/<image>`, or `root/{train,val,test}/<label>/<image>`), a CSV (`path,label[,split]`) or a prepared dataset's name, and run the notebook: `papermill your_data.ipynb out.ipynb -p data PATH`. It shows what the dataset holds, how well the features of each ImageNet network shipped offline suit it before any training, and, with N labelled images per class, whether a frozen network feeding a linear classifier (**FE**) is as good as fine-tuning its last stages (**FT**). The grid is the one of `python -m functions fe-vs-ft MNIST --data PATH` with the settings below, so either resumes what the other trained. It is executed here on `clipart`: Open Clip Art drawings in 12 classes (`python -m functions prepare-data clipart`).

# %%
data = "clipart"  # a folder or CSV of images, or a prepared dataset's name
folder = "MNIST"  # the study folder whose results/ keep the runs and figures (the command's first argument)
backbone = "efficientnet_lite0"  # an ImageNet network (or "study": the folder's own source CNN)
input_size = 96  # pixels the images are resized to (Lite0's native size: 224)
samples_per_class = [1, 5, 10]  # labelled training images per class
splits = 3  # seeded class-balanced training splits per size
val_per_class = 1  # images per class of the fixed validation set (the smallest class's share caps it)
max_epochs = 10  # FT: at most this many epochs (early stopping on the validation set)
cut_modes = ["FR"]  # the study's modes for where to cut the network (F, FR, FT)
track = True  # log new runs to MLflow (sqlite:///<output root>/mlflow.db, or $MLFLOW_TRACKING_URI)
output_root = None  # None: $TRANSFER_OUTPUT_ROOT, else this repository's study folders

# %%
# %matplotlib inline
from IPython.display import display
from functions.analysis import tradeoff
from functions.notebooks import own_data, study
study.use_output_root(output_root)
dataset = own_data.load_dataset(data)
print(dataset.name, f"fingerprint {dataset.fingerprint[:12]}")

# %% [markdown]
# ## What the dataset holds
# Images per class and split. A folder without split folders gets a seeded, class-stratified test split (recorded with the dataset's fingerprint in every results file); the validation images are drawn from the training ones.

# %%
display(own_data.class_counts(dataset))

# %%
display(own_data.sample_grid(dataset, folder))

# %% [markdown]
# ## Which network suits it, before any training
# LogME and the shrinkage H-score of each ImageNet network whose weights ship offline, on its pooled last-stage features of the training images (at `input_size` pixels for all): higher means the features separate the classes better with a linear model. A ranking by LogME that costs one forward pass per image, no training.

# %%
display(own_data.backbone_scores(dataset, input_size, folder=folder).round(3))

# %% [markdown]
# ## What the model zoo recommends
# The zoo's learned recommender (gradient boosting on the transferability scores of every network of the zoo, trained on the task bank's measured accuracies) ranks all its networks, ImageNet ones and the small study CNNs, for the dataset's whole task, each at its own input size; higher predicted means a better linear probe is expected. Kept in `results/recommendation_<dataset>.json` for this version of the dataset (`python -m functions recommend-model --data PATH --measure` also trains each probe to check the prediction).

# %%
recommendation = own_data.zoo_recommendation(data, folder)
display(recommendation.head(8).round(4))

# %% [markdown]
# ## The runs
# Results files are resumed: runs already in them are not trained again.

# %%
# NBVAL_IGNORE_OUTPUT
# (progress bars show rates and times)
records = own_data.fe_vs_ft(data, folder, backbone, samples_per_class, splits, track=track, input_size=input_size,
                            val_per_class=val_per_class, max_epochs=max_epochs)

# %% [markdown]
# ## Accuracy per pipeline and size
# Mean over splits with the half-width of the 95% confidence interval, and the mean per-class accuracy; then the mean cost of one run (training alone, and with the evaluation of the test split; energy in watt-hours as codecarbon measures or estimates it).

# %%
display(tradeoff.summary(records)[['splits', 'test_acc', 'ci95', 'mean_class_acc']].round(3))

# %%
# NBVAL_IGNORE_OUTPUT
# (times and energy differ between machines)
display(tradeoff.summary(records)[['training_seconds', 'training_wh', 'training_gflops', 'total_seconds',
                                   'total_wh']].round(3))

# %% [markdown]
# ## Accuracy against labelled images, and against cost
# Bands are 95% confidence intervals over the splits. In the cost figure each point is the mean run of one pipeline at one size (labelled with N), and the dashed line joins the Pareto-optimal points: nothing else is both cheaper and more accurate. Both are saved under `results/figures/`.

# %%
display(tradeoff.accuracy_curves(records, title=tradeoff.figure_title(dataset.name, backbone)))

# %%
display(tradeoff.pareto(records, title=tradeoff.figure_title(dataset.name, backbone)))

# %% [markdown]
# ## The guideline
# From the accuracies: FT minus FE test accuracy, paired by split (both trained on the same images), is within noise where its 95% interval holds zero.

# %%
print(own_data.guideline(records, dataset, backbone))

# %% [markdown]
# What fine-tuning costs over feature extraction on this machine (training alone):

# %%
# NBVAL_IGNORE_OUTPUT
# (the cost ratios differ between machines)
print(tradeoff.guideline(records))

# %% [markdown]
# ## Where to cut the network
# The study's question on these images (`python -m functions run --data PATH --mode FR`): cut point k keeps the first k stages of the ImageNet network with their weights, frozen; the stages after them are re-initialised and train (**FR**). Per data size, the cut point that validation accuracy picks, its test accuracy and its gain over the same network trained from its random initialisation on the same images, with a 95% bootstrap interval over the repeats and the Holm-corrected p over the cut points. The real profile's grid; resumed from its results files under `<Name>/results/real/` (for `clipart`: the committed `Clipart/` study, whose notebook shows every cut point and the modes F and FT too).

# %%
# NBVAL_IGNORE_OUTPUT: progress bars show rates and times
from functions.notebooks import backbone as cut_study
cut_studies = cut_study.studies(data, backbone, cut_modes, input_size=input_size)
cut_grids = cut_study.grids(cut_studies)
for mode, one in cut_studies.items():
    one.run(cut_grids[mode], progress=False)

# %%
display(cut_study.chosen_cuts(cut_studies, cut_grids))
