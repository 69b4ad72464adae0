# Two commands a newcomer needs: `make run` (whole pipeline) and `make test` (the test suite).
# Each creates .venv when missing and installs the pinned set from requirements.lock.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Model hubs are unreachable here and the defaults are embedded; never wait on the network.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export NO_MKDOCS_2_WARNING := 1
export PYTHONHASHSEED := 0

.PHONY: install tools run test docs serve-docs lab clean remote pull push

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: any other request can pull a multi-GB CUDA build.
	$(PY) -m pip install -q --no-compile torch==2.13.0
	$(PY) -m pip install -q --no-compile -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	# Byte-compiled on every core at once (pip compiles file by file on one: about a minute longer on 2 cores).
	# Python writes no .pyc at import when PYTHONDONTWRITEBYTECODE is set, so without this every process would
	# compile torch anew. Left out: the packages' own test suites and the async Kubernetes client, which nothing
	# imports (a fifth of the 500 MB of sources). Files for a newer Python (torch's py312_intrinsics.py) fail to
	# compile, as under pip.
	$(PY) -m compileall -qq -j 0 -x '/tests/|/kubernetes/aio/' $(VENV)/lib || true
	touch $@

install: $(VENV)/.installed

# Linters the tests run, each in its own venv under .tools/ (checkov's pins would break the project's).
tools:
	bash scripts/tools.sh

run: install
	dvc repro

# The project venv and the tool venvs are independent installs: made side by side.
test:
	$(MAKE) --no-print-directory -j2 install tools
	pytest

docs: install
	mkdocs build --strict

serve-docs: install
	mkdocs serve

# JupyterLab on the project, saving notebooks without outputs (jupyter_server_config.py): Git and DVC stay clean.
lab: install
	jupyter lab --config=jupyter_server_config.py

# Shared results (docs/remote.md): `make pull` fetches every output a teammate pushed, so `make run` reruns nothing.
# The remote's URL comes from KIT_DVC_REMOTE, written to the git-ignored .dvc/config.local as the default remote
# `team` (keeping options set there, e.g. an S3 endpointurl); credentials stay with the remote's own mechanism (ssh
# config or agent, AWS_*, GOOGLE_APPLICATION_CREDENTIALS), never in the repo.
remote: install
	@if [ -n "$$KIT_DVC_REMOTE" ]; then \
	  dvc config --local remote.team.url "$$KIT_DVC_REMOTE" && dvc config --local core.remote team; \
	elif ! dvc remote default >/dev/null 2>&1; then \
	  echo "No DVC remote: set KIT_DVC_REMOTE (e.g. ssh://host/srv/dvc, s3://bucket/kit); see docs/remote.md" >&2; exit 2; fi

pull: remote
	dvc pull

push: remote
	dvc push

clean:
	rm -rf reports/notebooks site
