# Two entry points for a newcomer: `make demo` and `make test` (see README.md).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# This project's machines install PyTorch's CPU build from local disk with this exact pin;
# elsewhere override it, e.g. `make demo TORCH_SPEC="torch>=2.2"`.
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= demo_output

.PHONY: demo test benchmark clean

$(VENV)/.installed: pyproject.toml PancreasSSLSeg/pancreas_ssl_seg/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/pancreas-ssl-seg segment Resources/Examples/example_ct.nii.gz -o $(DEMO_OUT)
	@echo "Outputs (labels, uncertainty, regions, .seg.nrrd, report, preview) are in $(DEMO_OUT)/"

test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m pytest -q

benchmark: $(VENV)/.installed
	$(PY) benchmarks/run_benchmark.py --out benchmarks/results

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
