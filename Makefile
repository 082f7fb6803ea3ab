# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo_out

.PHONY: install demo test test-all bench-real clean

$(BIN)/mmue: pyproject.toml requirements.txt
	$(PY) -m venv $(VENV)
	# torch first, pinned, so pip takes the wheels on disk rather than resolving a newer CUDA build
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q -e '.[test,pretrained,app,opencliptrain,heic]'
	touch $(BIN)/mmue

install: $(BIN)/mmue

demo: install
	$(BIN)/mmue demo --out $(DEMO_OUT)

# the suite (under 10 minutes on 2 cores); test-all adds the end-to-end checks marked slow, and is what CI runs
test: install
	$(BIN)/python -m pytest -q -m "not slow"

test-all: install
	$(BIN)/python -m pytest -q

# The bench grid on real data (public-domain clip art with human-written titles and keywords), offline.
bench-real: install
	@test -d /usr/share/openclipart/png || (apt-get update -qq && apt-get install -y -qq openclipart-svg openclipart-png)
	test -f real_data/test.csv || $(BIN)/mmue data openclipart real_data
	echo '{"data": "real_data"}' > real_data/bench.json
	$(BIN)/mmue bench --config real_data/bench.json --out bench_real

clean:
	rm -rf $(VENV) $(DEMO_OUT)
