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
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed

# Linters the tests run, each in its own venv under .tools/ (checkov's pins would break the project's).
tools:
	bash scripts/tools.sh

run: install
	dvc repro

test: install tools
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
