#!/usr/bin/env bash
# The pipeline end to end on the bundled sample, offline: bash scripts/demo.sh [RUN_DIR]
# A tiny random Qwen3-shaped model goes through prep, train, eval, merge and GGUF export on CPU in about a minute;
# run it again and every stage is skipped (remove RUN_DIR to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUN=${1:-runs/demo}
export HF_HUB_OFFLINE=1 WANDB_MODE=offline
"${VENV:-.venv}/bin/dispatchtune" run --recipe recipes/tiny.yaml --out "$RUN"
