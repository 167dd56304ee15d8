# Two commands for a newcomer: `make demo` and `make test`. Both set up .venv and the data first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)
export MPLBACKEND := Agg

.PHONY: demo test data pretrained serve clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

data: $(STAMP)
	$(PY) -m functions prepare-data MNIST FashionMNIST

demo: data
	$(PY) -m functions run MNIST --setup regular --mode FR --profile quick --plot

test: data
	$(PY) -m pytest -q tests

pretrained: data
	$(PY) -m functions pretrain --all --profile quick

clean:
	rm -rf $(VENV) data
