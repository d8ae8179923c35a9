#!/usr/bin/env bash
# Create .venv/ in the project root and install the project (editable) with its test and training extras.
# Idempotent: a second run only installs what changed. Needs Python 3.10+ (3.11 recommended).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch/torchvision pinned in pyproject.toml: pip takes the local wheels where a machine has them
.venv/bin/python -m pip install --quiet -e '.[test,train]'
# mypy reads the packages under their installed names (pyproject.toml, [tool.mypy])
mkdir -p .typecheck/deepfake_detect
for package in pipeline stages training; do ln -sfn "../../$package" ".typecheck/deepfake_detect/$package"; done
