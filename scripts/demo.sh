#!/usr/bin/env bash
# The pipeline end to end, offline, on a CPU: bash scripts/demo.sh [RUN_DIR]   (default runs/demo)
#
# What it shows: a model that learns to call tools. The model is a tiny SmolLM2-shaped transformer (2 layers,
# hidden size 256, about 1.4M weights) built here with random weights and a tokenizer trained on the demo's data
# as the chat template renders it: no pretrained weights can be downloaded, and a model this small can learn
# templated slot filling (pick the tool the request names, copy its values into the call) from scratch in minutes.
# The data is `dispatchtune synth`'s: 28,000 seeded requests over twelve everyday tools, with a held-out file whose
# argument values and phrasings training never saw. Every weight trains (recipes/demo.yaml: model.finetune=full); the gate then has to pass before
# merge, GGUF export and the GGUF's own eval, and the run ends with base vs trained vs GGUF on the held-out cases.
# Run it again and every finished stage is skipped (remove RUN_DIR to start over).
# The tiny tokenizer is trained here, so llama.cpp cannot recognise it: the export uses the llama.cpp tree the test
# support makes for tiny tokenizers (tests/llama_cpp_tiny.py), as the tests do.
set -euo pipefail
RUN=$(realpath -m -- "${1:-$(dirname "$0")/../runs/demo}")  # RUN_DIR as given, from the caller's directory
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BIN="${VENV:-.venv}/bin"
export HF_HUB_OFFLINE=1
export LLAMA_CPP_DIR=$("$BIN/python" tests/llama_cpp_tiny.py "${XDG_CACHE_HOME:-$HOME/.cache}/dispatchtune/llama.cpp-tiny")
[ -f "$RUN/synthetic/heldout.jsonl" ] || "$BIN/dispatchtune" synth --out "$RUN/synthetic"
"$BIN/dispatchtune" tiny --family smollm2 --corpus "$RUN/synthetic/train.jsonl" --chat-template chatml_compact \
  --out "$RUN/model"
"$BIN/dispatchtune" run --recipe demo --out "$RUN" model.name_or_path="$RUN/model" \
  "data.inputs=[$RUN/synthetic/train.jsonl]" "data.heldout_inputs=[$RUN/synthetic/heldout.jsonl]"
