#!/usr/bin/env bash
# The pipeline end to end on the bundled sample, offline: bash scripts/demo.sh [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUN=${1:-runs/demo}
export HF_HUB_OFFLINE=1 WANDB_MODE=offline
DT="${VENV:-.venv}/bin/dispatchtune"
"$DT" tiny --family qwen3 --out "$RUN/model"
"$DT" prep data/sample/*.json data/sample/formats/* --out "$RUN/data" --tokenizer "$RUN/model" --max-tokens 8192
