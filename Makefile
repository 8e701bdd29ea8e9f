# Two entry points: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-oracle test test-fast clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch and triton are pinned here (a CPU wheel of torch lies on local disk);
	# pyproject.toml only gives ranges.
	$(BIN)/pip install -q torch==2.13.0 triton==3.7.1
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fdm demo --out demo_out

demo-oracle: $(STAMP)
	rm -rf demo_oracle  # the target's own output from an earlier run
	$(BIN)/fdm sample oracle:periodic:lengthscale=4,period=24,weight=0.8,size=32,channels=3 \
		--scheme hierarchy-2 --n-obs 0 --length 300 --steps 25 --out demo_oracle
	@echo "oracle demo video: demo_oracle/video_0000.mp4"

test: $(STAMP)
	$(BIN)/python -m pytest -q

# One torch thread per worker: the workers already fill the cores.
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow" -n auto

clean:
	rm -rf $(VENV) demo_out demo_oracle
