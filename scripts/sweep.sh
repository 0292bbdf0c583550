#!/usr/bin/env bash
# Create a wandb sweep and run an agent on it: bash scripts/sweep.sh [SWEEP_YAML] [RUNS]
#   SWEEP_YAML  default recipes/sweeps/qwen3-0.6b-lora.yaml (it names the recipe, the data and the wandb project)
#   RUNS        how many runs this agent does (default 20)
# Needs `wandb login` once (or WANDB_API_KEY in the environment; nothing here prints it) and the data the sweep file
# names, prepared first: dispatchtune prep INPUTS... --out runs/qwen3-0.6b/data --tokenizer Qwen/Qwen3-0.6B
# More GPUs: one agent per GPU on the same sweep, in other shells, with the id this script prints:
#   CUDA_VISIBLE_DEVICES=1 .venv/bin/wandb agent --count 20 ENTITY/PROJECT/SWEEP_ID
set -euo pipefail
cd "$(dirname "$0")/.."
SWEEP=${1:-recipes/sweeps/qwen3-0.6b-lora.yaml}
RUNS=${2:-20}
WANDB="${VENV:-.venv}/bin/wandb"
export PATH="$(dirname "$WANDB"):$PATH"  # the sweep's command runs `dispatchtune` from this environment
# `wandb sweep` ends with "wandb: Run sweep agent with: wandb agent ENTITY/PROJECT/SWEEP_ID".
created=$("$WANDB" sweep "$SWEEP" 2>&1 | tee /dev/stderr)
sweep_id=$(printf '%s\n' "$created" | sed -n 's/.*wandb agent \([^ ]*\).*/\1/p' | tail -n 1)
[ -n "$sweep_id" ] || { echo "sweep.sh: no sweep id in the output of wandb sweep" >&2; exit 1; }
echo "sweep $sweep_id: starting an agent for $RUNS runs"
exec "$WANDB" agent --count "$RUNS" "$sweep_id"
