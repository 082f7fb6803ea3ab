# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo_out

.PHONY: install demo test test-fast clean

$(BIN)/mmue: pyproject.toml requirements.txt
	$(PY) -m venv $(VENV)
	# torch first, pinned, so pip takes the wheels on disk rather than resolving a newer CUDA build
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/mmue

install: $(BIN)/mmue

demo: install
	$(BIN)/mmue demo --out $(DEMO_OUT)

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) $(DEMO_OUT)
