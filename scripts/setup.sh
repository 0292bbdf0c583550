#!/usr/bin/env bash
# Creates .venv (or $VENV) and installs dispatchtune with its test tools. torch goes first and pinned: an unpinned
# torch would pull gigabytes of CUDA packages; with 2.13.0 present, pip keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==${TORCH_VERSION:-2.13.0}"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
