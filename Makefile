# Two commands for a newcomer:  make demo   |   make test
# Both create .venv (once), install the apt packages the synthetic corpus needs when missing and
# permitted, and install the project with its test extras.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := espeak-ng flite sox
RECIPE_ARGS ?=

.PHONY: demo test smoke apt venv bench clean

demo: apt venv
	$(PY) -m asr_kd.recipes.librispeech $(RECIPE_ARGS)

smoke: apt venv
	$(PY) -m asr_kd.recipes.librispeech --preset smoke $(RECIPE_ARGS)

test: apt venv
	$(PY) -m pytest -q

bench: venv
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_decode.py

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

# Installs espeak-ng/flite/sox with apt when one is missing and we are root (or have sudo).
apt:
	@missing=""; for p in espeak-ng flite sox; do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; \
	else echo "missing:$$missing; install them with your package manager (e.g. apt-get install $(APT_PACKAGES))" >&2; exit 1; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES) >/dev/null

clean:
	rm -rf $(VENV) exp data .pytest_cache
