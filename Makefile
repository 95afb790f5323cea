# The two commands of the README. Both create/refresh .venv themselves.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo venv clean

# torch 2.13.0 first (a CPU build on these machines; a plain `torch` would pull CUDA wheels), with
# numpy, which the extension build reaches through torch; then the package with
# --no-build-isolation so pip sees torch satisfied.
$(STAMP): setup.py $(wildcard gpt1_fast/csrc/*)
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q torch==2.13.0 numpy
	$(VPY) -m pip install -q --no-build-isolation -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	TRITON_INTERPRET=1 $(VPY) -m pytest -q tests

demo: $(STAMP)
	$(VPY) -m gpt1_fast.demo

clean:
	rm -rf $(VENV) build *.egg-info
