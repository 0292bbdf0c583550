#!/usr/bin/env bash
# Installs what `dispatchtune export gguf` needs into .venv (or $VENV): the `export` extra (gguf, sentencepiece),
# llama-cpp-python (loads and quantises GGUF files; PyPI has no wheel of it, so pip compiles it: about 5-8 minutes on
# 2 cores, then pip's wheel cache makes reinstalls quick) and llama.cpp's converter, unpacked from the same release's
# source distribution (which vendors all of llama.cpp) into ~/.cache/dispatchtune/llama.cpp-<version>, and beside it
# (llama.cpp-<version>-models) its tokenizer test vocabularies and published chat templates, which real-vocabulary
# tiny models (`dispatchtune tiny --vocab real`) and their tests read.
# CMAKE_ARGS: a portable CPU build (no -march=native), without the multimodal library we do not use. For a CUDA
# build of llama-cpp-python, set CMAKE_ARGS="-DGGML_CUDA=on" yourself. Re-runs skip what is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
export CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"}
pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }

pip_install -e ".[export]"
if ! "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('llama-cpp-python') != '$VERSION')" 2>/dev/null
then
  echo "building llama-cpp-python $VERSION (minutes on first install; CMAKE_ARGS=$CMAKE_ARGS)"
  pip_install "llama-cpp-python==$VERSION"
fi
# llama-cpp-python's `[server]` extra, its OpenAI-compatible server (tests/test_eval_endpoint.py serves a GGUF with
# it), named package by package: asking for the extra could make pip build llama-cpp-python again.
pip_install "uvicorn>=0.22.0" "fastapi>=0.100.0" "pydantic-settings>=2.0.1" "sse-starlette>=1.6.1" \
  "starlette-context>=0.3.6,<0.4" "PyYAML>=5.1"
"$PY" -m dispatchtune.export.llama_cpp_tools fetch --version "$VERSION"
