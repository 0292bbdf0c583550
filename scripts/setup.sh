#!/usr/bin/env bash
# Creates .venv (or $VENV) with dispatchtune, its test tools and its export tools. torch goes first and pinned: an
# unpinned torch would pull gigabytes of CUDA packages; with 2.13.0 present, pip keeps it.
# Set DISPATCHTUNE_NO_EXPORT=1 to skip the export tools (a llama-cpp-python build of several minutes); the GGUF tests
# then skip with that reason.
# A finished set-up leaves a stamp in the venv, of the files and settings that decide what gets installed: while
# they are unchanged, a re-run (each demo and test run starts with one) skips pip, which takes half a minute even
# with nothing to do. The source is installed editable, so code changes need no re-run; to reinstall anyway, delete
# $VENV/.dispatchtune-setup.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
STAMP="$VENV/.dispatchtune-setup"
WANT=$(cat pyproject.toml scripts/setup.sh scripts/install_export_tools.sh | sha256sum | cut -d' ' -f1)
WANT="$WANT torch=${TORCH_VERSION:-2.13.0} no_export=${DISPATCHTUNE_NO_EXPORT:-0} llama=${LLAMA_CPP_PYTHON_VERSION:-}"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  # the llama.cpp converter lives in a cache outside the venv: fetched again if it went
  [ "${DISPATCHTUNE_NO_EXPORT:-0}" = 1 ] || "$VENV/bin/python" -m dispatchtune.export.llama_cpp_tools fetch >/dev/null
  exit 0
fi
rm -f "$STAMP"
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@"; }
pip_install "torch==${TORCH_VERSION:-2.13.0}"
pip_install -e ".[test,serve]"
# BFCL's reference AST checker, run by tests/test_bfcl_agreement.py against our scorer (its code only, none of its
# data). --no-deps: it would pull every LLM provider's client, which the checker itself never uses.
pip_install --no-deps "bfcl-eval==2026.3.23"
if [ "${DISPATCHTUNE_NO_EXPORT:-0}" != 1 ]; then
  VENV=$VENV bash scripts/install_export_tools.sh
  # Go renders the Ollama Modelfile templates in tests/test_modelfile.py, as Ollama does (text/template).
  if ! command -v go >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -qq --no-install-recommends golang-go >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends golang-go >/dev/null 2>&1; }) \
      || echo "golang-go could not be installed: the Modelfile rendering tests will skip"
  fi
fi
echo "$WANT" > "$STAMP"
