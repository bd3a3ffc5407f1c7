#!/usr/bin/env bash
# make claims-laptop: the overnight laptop-scale run behind the paper's claims, for each dataset (the latent-motive
# synthetic world, NLSY79):
#   compile (configs/compile_laptop[_synthetic].yaml: evidence teacher + heuristic judge on 5,000 NLSY79 and 3,000
#   synthetic training persons, TRL exports incl. the hybrid student's traces with the GRU's candidates) -> distill
#   (configs/distill_laptop.yaml: joint, two_model, direct and hybrid LoRA students, one epoch)
# and then the paper-claims tables over both datasets (configs/claims_laptop.yaml: 300 test persons per dataset).
# Every step writes its own run directory under runs/ and is skipped when its metrics.json exists (a killed step
# resumes: compile reuses its candidates, distill its latest checkpoint, claims its finished rows).
#   DATASETS="nlsy79"          restricts the datasets (space or comma list; default: synthetic nlsy79)
#   STUDENTS="joint"           trains only these students (space or comma list; default: joint two_model direct hybrid)
#   CLAIMS=0                   skips the claims step (e.g. while training students one at a time)
#   COMPILE_ARGS, DISTILL_ARGS, CLAIMS_ARGS   extra flags of each step (e.g. the test suite's tiny version)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True
export NEXTOCC_DATA_DIR="${NEXTOCC_DATA_DIR:-$(cd .. && pwd)/shared/data}"
DATASETS=$(echo "${DATASETS:-synthetic nlsy79}" | tr ',' ' ')
STUDENTS=$(echo "${STUDENTS:-joint two_model direct hybrid}" | tr ',' ' ')
CLAIMS=${CLAIMS:-1}
mkdir -p runs/logs
step() { echo "== $(date +%T) $*"; }
ran=0
t_start=$(date +%s)

for ds in $DATASETS; do
  case "$ds" in
    nlsy79 | synthetic) ;;
    *) echo "unknown dataset '$ds' in DATASETS: use synthetic and/or nlsy79" >&2; exit 2 ;;
  esac
done
for mode in $STUDENTS; do
  case "$mode" in
    joint | two_model | direct | hybrid) ;;
    *) echo "unknown student '$mode' in STUDENTS: use joint, two_model, direct and/or hybrid" >&2; exit 2 ;;
  esac
done

for ds in $DATASETS; do
  compile_config=configs/compile_laptop.yaml
  if [ "$ds" = synthetic ]; then compile_config=configs/compile_laptop_synthetic.yaml; fi
  compile_run="runs/compile/laptop-$ds"
  if [ -f "$compile_run/metrics.json" ]; then
    step "compile $ds: done ($compile_run/metrics.json), skipped"
  else
    step "compile $ds"
    $PY -m compile.optimize --config "$compile_config" --run_name "laptop-$ds" ${COMPILE_ARGS:-} \
        2>&1 | tee "runs/logs/compile_laptop-$ds.log" | tail -40
    ran=1
  fi
  # oracle examples per program step
  rows=$($PY -c "import yaml; print(yaml.safe_load(open('configs/distill_laptop.yaml'))['max_train_rows'])")
  for mode in $STUDENTS; do
    run="runs/distill/laptop-$ds-$mode"
    if [ -f "$run/metrics.json" ]; then
      step "distill $ds $mode: done ($run/metrics.json), skipped"
      continue
    fi
    # the joint and hybrid programs answer in one call: their students train on those single-call rows of
    # sft_joint.jsonl / sft_hybrid_joint.jsonl (which also hold the two steps' rows)
    steps_flag=""
    if [ "$mode" = joint ] || [ "$mode" = hybrid ]; then steps_flag="--train_steps reason+occupation"; fi
    step "distill $ds $mode ($rows rows per step at most)"
    start=$(date +%s)
    $PY -m finetune.distill --config configs/distill_laptop.yaml --from_run "$compile_run" --mode "$mode" \
        --run_name "laptop-$ds-$mode" --max_train_rows "$rows" $steps_flag --resume true ${DISTILL_ARGS:-} \
        2>&1 | tee "runs/logs/distill_laptop-$ds-$mode.log" | tail -30
    echo "student $ds $mode: training wall time $(($(date +%s) - start)) s (this invocation)"
    ran=1
  done
done
if [ "$CLAIMS" = 0 ]; then
  step "claims: skipped (CLAIMS=0)"
elif [ "$ran" = 0 ] && [ -f runs/claims/laptop/claims.json ]; then
  step "claims: done (runs/claims/laptop/claims.json) and no run changed, skipped"
else
  step claims
  datasets=$(echo $DATASETS | tr ' ' ',')
  $PY -m experiments.paper_claims --config configs/claims_laptop.yaml --datasets "$datasets" ${CLAIMS_ARGS:-} \
      2>&1 | tee runs/logs/claims_laptop.log | tail -80
fi
step "done: total wall time $(($(date +%s) - t_start)) s"
