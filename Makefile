# The two set-up commands (README): `make demo` and `make test`. Both create .venv with pip
# on a fresh machine, install what they need, then run.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.osdhuman-installed
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) demo/run.py --out demo_out

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks demo
	$(PY) -m pytest -q

bench: $(STAMP)
	for b in benchmarks/*.py; do case $$b in *reference*) continue;; esac; echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf demo_out .pytest_cache
