# Two commands for a newcomer: `make demo` and `make test`. Both set up .venv and the data first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# folders whose notebooks carry executed outputs (see README: the others are not executed yet)
NOTEBOOK_FOLDERS := MNIST FashionMNIST MNIST_to_FashionMNIST FashionMNIST_to_MNIST
export MPLBACKEND := Agg

.PHONY: demo test data pretrained results notebooks serve clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# make `import functions` work from any folder (notebooks, kernels, benchmarks)
	echo "$(CURDIR)" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/transfer_study.pth"
	touch $(STAMP)

data: $(STAMP)
	$(PY) -m functions prepare-data MNIST FashionMNIST

# trains into demo/ (the committed MNIST results stay as they are); its numbers equal theirs
demo: data
	TRANSFER_OUTPUT_ROOT=$(CURDIR)/demo $(PY) -m functions run MNIST --setup regular --mode FR --profile quick --plot

# unit tests on both cores, then every notebook under nbval (one thread per process: two at once)
test: data
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadscope --durations=8 tests \
		--nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg $(NOTEBOOK_FOLDERS)

# the committed source models (quick profile) of every folder whose data is available offline
pretrained: data
	$(PY) -m functions pretrain --all --profile quick

# every committed results file: quick sweeps of each setup and mode, then the notebooks run on them
results: pretrained
	for spec in "MNIST regular" "FashionMNIST regular" "FashionMNIST random" \
	            "MNIST_to_FashionMNIST cross" "FashionMNIST_to_MNIST cross"; do \
	  set -- $$spec; for mode in FR F FT; do \
	    $(PY) -m functions run $$1 --setup $$2 --mode $$mode --no-progress || exit 1; done; done

notebooks: results
	$(PY) -m functions notebooks --execute $(NOTEBOOK_FOLDERS)

# the sample-efficiency service on 127.0.0.1:$PORT (default 8000); OpenAPI page at /docs
serve: data
	$(PY) -m uvicorn functions.service:app --host 127.0.0.1 --port $${PORT:-8000}

clean:
	rm -rf $(VENV) data demo
