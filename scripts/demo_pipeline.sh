#!/usr/bin/env bash
# The main job on the embedded default model, end to end on a CPU, for each dataset (synthetic, NLSY79):
#   compile (oracle reasons, optimized prompt, TRL exports) -> distill (joint, two-model and direct students)
# and then the paper-claims tables over both datasets (configs/claims_small.yaml).
# Every step writes its own run directory under runs/ and resumes (or is skipped) when re-run.
# DATASETS="synthetic" restricts the datasets; DISTILL_STEPS sets the SFT steps per student.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True
export NEXTOCC_DATA_DIR="${NEXTOCC_DATA_DIR:-$(cd .. && pwd)/shared/data}"
STEPS=${DISTILL_STEPS:-8}
DATASETS=${DATASETS:-"synthetic nlsy79"}
mkdir -p runs/logs
step() { echo "== $(date +%T) $*"; }

for ds in $DATASETS; do
  if [ ! -f "runs/compile/demo-$ds/metrics.json" ]; then
    step "compile $ds"
    $PY -m compile.optimize --config configs/demo.yaml --dataset "$ds" --run_name "demo-$ds" \
        2>&1 | tee "runs/logs/compile_demo-$ds.log" | tail -40
  fi
  for mode in joint two_model direct; do
    if [ ! -f "runs/distill/demo-$ds-$mode/metrics.json" ]; then
      step "distill $ds $mode"
      # the before/after table of the synthetic joint and two-model students; claims evaluates every student anyway
      evaluate=false
      if [ "$ds" = synthetic ] && [ "$mode" != direct ]; then evaluate=true; fi
      $PY -m finetune.distill --config configs/distill_demo.yaml --from_run "runs/compile/demo-$ds" --mode "$mode" \
          --run_name "demo-$ds-$mode" --max_steps "$STEPS" --eval_steps "$STEPS" --save_steps 4 --resume true \
          --evaluate "$evaluate" 2>&1 | tee "runs/logs/distill_demo-$ds-$mode.log" | tail -30
    fi
  done
done
step claims
$PY -m experiments.paper_claims --config configs/claims_small.yaml --datasets "${DATASETS// /,}" \
    2>&1 | tee runs/logs/claims_small.log | tail -60
step done
