# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(abspath $(VENV))/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
export PATH := $(BIN):$(PATH)

.PHONY: demo demo-weather test install clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)" -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh

demo-weather: $(STAMP)
	bash scripts/demo_weather.sh

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) demo_out demo_weather
