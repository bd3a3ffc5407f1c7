#!/usr/bin/env bash
# The main job on the embedded default model, end to end on a CPU:
#   compile (oracle reasons, optimized prompt, TRL exports) -> distill (joint and two-model students)
#   -> zero-shot evaluation on NLSY79 -> paper-claims table.
# Every step writes its own run directory under runs/ and resumes when re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True
export NEXTOCC_DATA_DIR="${NEXTOCC_DATA_DIR:-$(cd .. && pwd)/shared/data}"
STEPS=${DISTILL_STEPS:-8}
mkdir -p runs/logs
step() { echo "== $(date +%T) $*"; }

step compile; $PY -m compile.optimize --config configs/demo.yaml 2>&1 | tee runs/logs/compile_demo.log | tail -40
for mode in joint two_model; do
  if [ ! -f "runs/distill/demo_$mode/metrics.json" ]; then
    step "distill $mode"
    $PY -m finetune.distill --config configs/distill_demo.yaml --from_run runs/compile/demo --mode "$mode" \
        --run_name "demo_$mode" --max_steps "$STEPS" --eval_steps "$STEPS" --save_steps 4 --resume true \
        2>&1 | tee "runs/logs/distill_$mode.log" | tail -30
  fi
done
step "evaluate NLSY79 (zero-shot two-step)"
$PY -m programs.evaluate --dataset nlsy79 --program two_step --lm local:gemma-3-270m --split dev \
    --max_examples "${EVAL_N:-50}" --threads 8 --output_dir runs/evaluate 2>&1 | tee runs/logs/evaluate_nlsy79.log | tail -8
step claims; $PY -m experiments.paper_claims --config configs/claims_small.yaml 2>&1 | tee runs/logs/claims.log | tail -40
step done
