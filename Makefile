# Two commands for a newcomer: `make demo` and `make test`. Both set up .venv and the data first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# folders whose notebooks carry executed outputs (see README: the others are not executed yet), and
# the notebooks over all folders at the top level
NOTEBOOK_FOLDERS := MNIST FashionMNIST MNIST_to_FashionMNIST FashionMNIST_to_MNIST MNIST_to_digits Clipart Clipart_to_Stamps
TOP_NOTEBOOKS := reproduction.ipynb model_zoo.ipynb your_data.ipynb
export MPLBACKEND := Agg
# mkdocs' plugins print a notice about a future MkDocs 2 on every build; the pins above keep 1.6.1
export DISABLE_MKDOCS_2_WARNING := true
export NO_MKDOCS_2_WARNING := 1

.PHONY: demo test docs docs-serve chromium lint mutation data pretrained results range zoo strategies adaptation real fe-vs-ft notebooks serve lab mlflow clean

# the pinned packages, then this package installed editable: `import functions` and
# `python -m functions` work from any folder and any kernel of the venv
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

data: $(STAMP)
	$(PY) -m functions prepare-data MNIST FashionMNIST clipart stamps

# trains into demo/ (the committed MNIST results stay as they are) the quick grid's 1% of the target
# data, where transfer matters most; its numbers equal the committed ones
demo: data
	TRANSFER_OUTPUT_ROOT=$(CURDIR)/demo $(PY) -m functions run MNIST --setup regular --mode FR --profile quick \
		--percentages 0.01 --plot

# the data, the import layers (pyproject.toml), the documentation site and its test's browser side by
# side once .venv is there, then unit tests on both cores (the site's browser test among them) and
# every notebook under nbval (one thread per process: two at once)
test:
	$(MAKE) -j3 data lint docs chromium
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadscope --durations=20 tests \
		--nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg $(NOTEBOOK_FOLDERS) $(TOP_NOTEBOOKS)

lint: $(STAMP)
	$(VENV)/bin/lint-imports

# the documentation site into site/ (mkdocs.yml; the API, command-line, notebook and results pages are
# generated from the repository by docs/gen_pages.py); --strict: a broken link or reference fails
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

# the site on 127.0.0.1:$PORT (default 8000), rebuilt on every change
docs-serve: $(STAMP)
	$(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:$${PORT:-8000}

# the browser of the site's test (tests/integration/test_docs.py): Debian's chromium, since
# playwright's own browser download is not reachable from machines without internet; installed
# from the OS's package mirror (as root) only when it is missing
chromium:
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)

# mutation testing of the core modules against the tests that cover them, then the per-module
# report benchmarks/results/mutation.json; not part of `make test` (benchmarks/mutation.py says how)
mutation: data
	$(PY) -m pip install --quiet mutmut==3.8.1
	$(PY) benchmarks/mutation.py

# the committed source models (quick profile) of every folder whose data is available offline
pretrained: data
	$(PY) -m functions pretrain --all --profile quick

# every committed results file: quick sweeps of each setup and mode, then the notebooks run on them
results: pretrained
	for spec in "MNIST regular" "FashionMNIST regular" "FashionMNIST random" \
	            "MNIST_to_FashionMNIST cross" "FashionMNIST_to_MNIST cross" "MNIST_to_digits cross"; do \
	  set -- $$spec; for mode in FR F FT; do \
	    $(PY) -m functions run $$1 --setup $$2 --mode $$mode --no-progress || exit 1; done; done

# the study over the whole data range (the range profile: 0.1% to 100% of the target data): mode FR
# for every offline setup, F and FT too for MNIST and FashionMNIST (whose upstream tables of F and FT
# the reproduction notebook compares); resumable, one folder and mode after another
RANGE_RUNS := "MNIST regular FR" "FashionMNIST regular FR F FT" "MNIST_to_FashionMNIST cross FR" \
              "FashionMNIST_to_MNIST cross FR" "FashionMNIST random FR" "MNIST regular F FT"
range: pretrained
	for spec in $(RANGE_RUNS); do set -- $$spec; folder=$$1; setup=$$2; shift 2; for mode in "$$@"; do \
	  $(PY) -m functions run $$folder --setup $$setup --mode $$mode --profile range --no-progress || exit 1; done; done

# the fine-tuning strategies as modes of the quick study at 1% of the target data, for each folder
# whose notebooks are executed (what the strategies notebooks show): LoRA at ranks 1, 2, 4 and 8 on
# MNIST, rank 4 elsewhere.  Every cut point at the quick profile's 2 repeats, then each mode (FR
# too) to the repeats its test against FR needs at the cut those runs' validation accuracy picks:
# 9 on MNIST (8 strategies), 8 elsewhere (5); then the same repeats at that cut with every run
# choosing its learning rate on validation (modes <mode>-tuned), and the baseline to as many
# repeats.  Each spec: folder, setup, repeats, the LoRA rank whose rate is tuned (on MNIST the one
# of the four whose validation accuracy the strategies notebook prints as best), more LoRA ranks
STRATEGY_MODES := progressive discriminative lora_r4 ia3 bitfit
# Then, on the folders whose strategies notebooks show them, plain fine-tuning (F) and its three
# regularisers (L2-SP, DELTA, BSS; each run choosing its weight on validation): every cut and the
# repeats at the chosen cut for the regularisers (F's every cut is the quick study's), then all four
# tuned at their chosen cuts, where the regularisers are tested against F in a family of three
REGULARISER_MODES := l2sp delta bss
REGULARISED := "MNIST regular 9" "FashionMNIST regular 8" "MNIST_to_FashionMNIST cross 8" "FashionMNIST_to_MNIST cross 8"
strategies: pretrained
	for spec in "MNIST regular 9 lora_r1 lora_r1 lora_r2 lora_r8" "FashionMNIST regular 8 lora_r4" \
	            "MNIST_to_FashionMNIST cross 8 lora_r4" "FashionMNIST_to_MNIST cross 8 lora_r4"; do \
	  set -- $$spec; folder=$$1; setup=$$2; repeats=$$3; tuned_lora=$$4; shift 4; \
	  for mode in FR $(STRATEGY_MODES) "$$@"; do \
	    $(PY) -m functions run $$folder --setup $$setup --mode $$mode --percentages 0.01 --no-progress || exit 1; \
	    $(PY) -m functions run $$folder --setup $$setup --mode $$mode --percentages 0.01 --repeats $$repeats \
	      --at-chosen-cut --no-baselines --no-progress || exit 1; \
	  done; \
	  for mode in FR progressive discriminative $$tuned_lora ia3 bitfit; do \
	    $(PY) -m functions run $$folder --setup $$setup --mode $$mode-tuned --percentages 0.01 --repeats $$repeats \
	      --at-chosen-cut --no-baselines --no-progress || exit 1; \
	  done; \
	  $(PY) -m functions run $$folder --setup $$setup --mode FR --percentages 0.01 --repeats $$repeats \
	    --at-chosen-cut --no-progress || exit 1; done
	for spec in $(REGULARISED); do set -- $$spec; folder=$$1; setup=$$2; repeats=$$3; \
	  for mode in $(REGULARISER_MODES); do \
	    $(PY) -m functions run $$folder --setup $$setup --mode $$mode --percentages 0.01 --no-progress || exit 1; \
	    $(PY) -m functions run $$folder --setup $$setup --mode $$mode --percentages 0.01 --repeats $$repeats \
	      --at-chosen-cut --no-baselines --no-progress || exit 1; done; \
	  for mode in F $(REGULARISER_MODES); do \
	    $(PY) -m functions run $$folder --setup $$setup --mode $$mode-tuned --percentages 0.01 --repeats $$repeats \
	      --at-chosen-cut --no-baselines --no-progress || exit 1; done; done

# domain adaptation (source only, AdaBN, DANN, CORAL: unlabelled target images) and distillation
# from a 64-channel teacher, as modes of the quick study of each cross-dataset folder (what the
# adaptation notebooks resume); the BatchNorm source models and the teachers are trained when missing.
# Each folder also runs 8 repeats at the headline cut (the last block), enough for an exact test
# over the three methods against source only, and at 1% (the fewest labels, where a teacher can
# matter most) distillation and FR 8 repeats each at the cut its validation accuracy picks (the
# paired test of teacher against none; each repeat fine-tunes a teacher of its own); the MNIST <->
# FashionMNIST pairs, whose classes mean different things, run DANN and CORAL at the papers'
# weight (their folder settings in functions/config.py, which every command applies to them).
# Last, on the digits folder, whose classes are the target's own, MCC and CDAN (which lean on the
# source classifier's predictions) the same way, and its DANN, CORAL, MCC and CDAN choose their
# learning rate with their weight, without target labels, at the last block with 1% and 5% of the
# target images (8 repeats)
ADAPTATION_MODES := source_only adabn dann coral distill
adaptation: pretrained
	for folder in MNIST_to_digits MNIST_to_FashionMNIST FashionMNIST_to_MNIST; do \
	  for mode in $(ADAPTATION_MODES); do $(PY) -m functions run $$folder --mode $$mode --no-progress || exit 1; done; \
	  $(PY) -m functions run $$folder --mode source_only --repeats 8 --no-progress || exit 1; \
	  for mode in adabn dann coral; do \
	    $(PY) -m functions run $$folder --mode $$mode --cuts 6 --repeats 8 --no-progress || exit 1; done; \
	  for mode in distill FR; do \
	    $(PY) -m functions run $$folder --mode $$mode --percentages 0.01 --repeats 8 --at-chosen-cut --no-baselines \
	      --no-progress || exit 1; done; done
	for mode in mcc cdan; do $(PY) -m functions run MNIST_to_digits --mode $$mode --no-progress || exit 1; \
	  $(PY) -m functions run MNIST_to_digits --mode $$mode --cuts 6 --repeats 8 --no-progress || exit 1; done
	for mode in dann coral mcc cdan; do \
	  $(PY) -m functions run MNIST_to_digits --mode $$mode-tuned --cuts 6 --percentages 0.01 0.05 --repeats 8 \
	    --no-baselines --no-progress || exit 1; done

# the cut-point study of ImageNet EfficientNet-Lite0 on the clipart images (Clipart/), real profile:
# the baselines with FR, then F and FT on the same subsets, and the fine-tuning strategies at 5 images
# per class (paired with F's runs there), then F and each strategy again at the cut those runs'
# validation accuracy picks, every run choosing its learning rate on validation (then the regularisers
# of F that the strategies notebook shows, each run also choosing its weight); the same on the
# stamps images at 1, 2 and 5 per class and all of them (the strategies and the regularisers at 5 per
# class), and its adaptation from clipart to the unlabelled stamps (source only, AdaBN, DANN, CORAL,
# MCC, CDAN; Clipart_to_Stamps/), then DANN, CORAL, MCC and CDAN choosing their learning rate too,
# at the cut the source models' validation accuracy picks; resumable like every sweep
BACKBONE_REGULARISERS := l2sp delta bss
STRATEGIES_AT_5 := --per-class 5 --cuts 3 5 7 --repeats 8 --no-baselines --no-progress
STAMPS_FOLDER := --data stamps --output Clipart_to_Stamps
STAMPS := $(STAMPS_FOLDER) --per-class 1 2 5 --percentages 1.0 --no-progress
real: data
	$(PY) -m functions run --data clipart --mode FR --no-progress
	$(PY) -m functions run --data clipart --mode F --no-baselines --no-progress
	$(PY) -m functions run --data clipart --mode FT --no-baselines --no-progress
	for mode in $(STRATEGY_MODES); do $(PY) -m functions run --data clipart --mode $$mode $(STRATEGIES_AT_5) \
	  || exit 1; done
	for mode in F $(STRATEGY_MODES); do $(PY) -m functions run --data clipart --mode $$mode-tuned --per-class 5 \
	  --at-chosen-cut --repeats 8 --no-baselines --no-progress || exit 1; done
	for mode in $(BACKBONE_REGULARISERS); do $(PY) -m functions run --data clipart --mode $$mode $(STRATEGIES_AT_5) \
	  || exit 1; $(PY) -m functions run --data clipart --mode $$mode-tuned --per-class 5 --at-chosen-cut --repeats 8 \
	  --no-baselines --no-progress || exit 1; done
	$(PY) -m functions run $(STAMPS) --mode F
	$(PY) -m functions run $(STAMPS) --mode FR --no-baselines
	$(PY) -m functions run $(STAMPS) --mode FT --no-baselines
	for mode in $(STRATEGY_MODES); do $(PY) -m functions run $(STAMPS_FOLDER) --mode $$mode $(STRATEGIES_AT_5) \
	  || exit 1; done
	for mode in F $(STRATEGY_MODES); do $(PY) -m functions run $(STAMPS_FOLDER) --mode $$mode-tuned --per-class 5 \
	  --at-chosen-cut --repeats 8 --no-baselines --no-progress || exit 1; done
	for mode in $(BACKBONE_REGULARISERS); do $(PY) -m functions run $(STAMPS_FOLDER) --mode $$mode $(STRATEGIES_AT_5) \
	  || exit 1; $(PY) -m functions run $(STAMPS_FOLDER) --mode $$mode-tuned --per-class 5 --at-chosen-cut \
	  --repeats 8 --no-baselines --no-progress || exit 1; done
	$(PY) -m functions run --data stamps --source clipart --no-progress
	for mode in dann coral mcc cdan; do $(PY) -m functions run --data stamps --source clipart --mode $$mode-tuned \
	  --at-chosen-cut --no-progress || exit 1; done

# feature extraction against fine-tuning: the default few-shot grid of each offline folder, for
# EfficientNet-Lite0 and the folder's source CNN, and for EfficientNet-Lite0 on the clipart and the
# stamps images (whose smallest classes have one validation image; the stamps' 11 images in all,
# so their sizes stop at 5 per class) (what the fe_vs_ft notebooks resume)
fe-vs-ft: pretrained
	for folder in MNIST FashionMNIST MNIST_to_FashionMNIST FashionMNIST_to_MNIST; do for backbone in efficientnet_lite0 study; do \
	  $(PY) -m functions fe-vs-ft $$folder --backbone $$backbone --no-progress || exit 1; done; done
	$(PY) -m functions fe-vs-ft --data clipart --backbone efficientnet_lite0 --val-per-class 1 --no-progress
	$(PY) -m functions fe-vs-ft $(STAMPS_FOLDER) --backbone efficientnet_lite0 --val-per-class 1 \
	  --samples-per-class 1 2 5 --no-progress

# the model zoo: its study CNNs (the quick profile's pretraining), then the model x task matrix over
# the task bank, the recommenders' evaluation and the zoo's files under zoo/results/, then the same
# over tasks drawn from the clipart and stamps classes (a bank of their own); then each model by
# feature extraction and by fine-tuning on a sample of both banks' tasks, with what each costs
zoo: data
	$(PY) -m functions zoo pretrain
	$(PY) -m functions zoo build
	$(PY) -m functions zoo build --data clipart stamps
	$(PY) -m functions zoo ways
	$(PY) -m functions zoo ways --data clipart stamps

# the study folders' notebooks, then the top-level ones over all folders
notebooks: results fe-vs-ft strategies adaptation range real zoo
	$(PY) -m functions notebooks --execute $(NOTEBOOK_FOLDERS) .

# the sample-efficiency service on 127.0.0.1:$PORT (default 8000); OpenAPI page at /docs
serve: data
	$(PY) -m uvicorn functions.efficiency.service:app --host 127.0.0.1 --port $${PORT:-8000}

# JupyterLab on 127.0.0.1:$PORT (default 8888) over the study folders, with the project's kernel;
# token authentication stays on: open the URL with the token that it prints; Ctrl-C twice stops it
# (tests/integration/test_lab.py starts the `jupyter lab` line below as `make -n lab` prints it)
lab: data
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (transfer study)" >/dev/null
	$(VENV)/bin/jupyter lab --no-browser --ip 127.0.0.1 --port $${PORT:-8888} --allow-root --notebook-dir "$(CURDIR)"

# the MLflow UI on 127.0.0.1:$PORT (default 5000) over the runs logged to the output root's
# mlflow.db ($TRANSFER_OUTPUT_ROOT, else the repository)
mlflow: $(STAMP)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(abspath $(or $(TRANSFER_OUTPUT_ROOT),$(CURDIR)))/mlflow.db --host 127.0.0.1 --port $${PORT:-5000}

clean:
	rm -rf $(VENV) data demo site .cache/mkdocs-jupyter
