#!/usr/bin/env bash
# Isolated tool environments the tests and CI call, kept out of the project venv because their pins clash with it
# (checkov pins old packaging/networkx/boto3 and would downgrade torch's and pip's dependencies). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS_DIR="${TOOLS_DIR:-.tools}"
PYTHON="${PYTHON:-python3}"
CHECKOV_VERSION="3.3.30"

# checkov: scans the Dockerfile and the Kubernetes manifests (tests/test_dockerfile.py, tests/test_k8s.py).
checkov_env="$TOOLS_DIR/checkov"
if [ -x "$checkov_env/bin/checkov" ] && [ -f "$checkov_env/.installed-$CHECKOV_VERSION" ]; then
  echo "tools: checkov $CHECKOV_VERSION present in $checkov_env"
else
  rm -rf "$checkov_env"
  "$PYTHON" -m venv "$checkov_env"
  # The filter drops pip's one-line-per-package warnings about absent local index mirrors.
  "$checkov_env/bin/python" -m pip install -q "checkov==$CHECKOV_VERSION" 2>&1 | { grep -v "is ignored: it is neither" || true; }
  touch "$checkov_env/.installed-$CHECKOV_VERSION"
  echo "tools: installed checkov $CHECKOV_VERSION in $checkov_env"
fi
