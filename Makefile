# Two entry points, both self-installing into .venv:
#   make demo   install nnvis and write a report on the bundled demo images
#   make test   install nnvis with its test dependencies and run the tests
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned, so that nothing later resolves to a CUDA build.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	touch $@

# LXT (the AttnLRP reference) declares bitsandbytes, accelerate and open_clip, which its explicit rules never
# import and which would bring GPU packages: it is installed without them. craft-xai (the CRAFT reference)
# asks for opencv-python and matplotlib, which its torch module never imports: the same.
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt lxt quantus craft-xai
	touch $@

# The browser tests drive Debian's Chromium (Playwright cannot download its own here).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	$(SUDO) apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/nnvis report examples/demo/images --masks examples/demo/masks --plugins all -o nnvis-report
	@echo "open nnvis-report/index.html"

test: install-test $(CHROMIUM)
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder --durations=15

clean:
	rm -rf $(VENV) nnvis-report
