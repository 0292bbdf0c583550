#!/usr/bin/env bash
# The pipeline end to end on the bundled sample, offline: bash scripts/demo.sh [RUN_DIR]
# A tiny random Qwen3-shaped model goes through prep, train, eval, merge and GGUF export on CPU in about a minute;
# run it again and every stage is skipped (remove RUN_DIR to start over).
# The tiny model's tokenizer is trained locally, so llama.cpp cannot recognise it: the export uses the llama.cpp tree
# the test support makes for the tiny tokenizers (tests/llama_cpp_tiny.py), as the tests do.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUN=${1:-runs/demo}
PY="${VENV:-.venv}/bin/python"
export HF_HUB_OFFLINE=1
export LLAMA_CPP_DIR=$("$PY" tests/llama_cpp_tiny.py "${XDG_CACHE_HOME:-$HOME/.cache}/dispatchtune/llama.cpp-tiny")
"${VENV:-.venv}/bin/dispatchtune" run --recipe tiny --out "$RUN"
