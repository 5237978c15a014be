#!/usr/bin/env bash
# benchmarks/gpu_check.sh OUTDIR: everything emanet needs checked on a GPU, in one run of at most ~8 minutes
# on one GPU (H200-class), every figure in OUTDIR/gpu_check.json.
#
# OUTDIR stays small: gpu_check.json (every part's status and figures; a failed part's status holds the
# last 20 lines of its log, before torchrun's own report) and logs/<part>.log for the failed parts only.
# Everything else (the dataset, checkpoints, every part's log and JSON) goes to the work folder
# GPU_CHECK_WORK, default a fresh temporary folder that is removed at the end; name one to keep it (an
# OUTDIR or GPU_CHECK_WORK that is relative is taken from the folder the script is started in).
#
#   0. environment   torch/CUDA versions, the device, the git commit; a synthetic VOC-sized dataset
#                    (`emanet synth` + `emanet prepare`, images GPU_CHECK_IMAGE_SIZE) in WORK/data.
#   1. cuda_tests    pytest -m cuda (tests/test_cuda.py): AMP bf16/fp16 training steps with a finite loss,
#                    SyncBN under nccl in one process, channels_last equal to contiguous.
#   2. resume        `emanet train` under `torchrun --nproc_per_node=1` (nccl on CUDA, gloo on CPU; DDP and
#                    SyncBN), deterministic, GPU_CHECK_RESUME_ITERATIONS iterations with a checkpoint after
#                    each: one uninterrupted run, a second one (the device's run-to-run noise), one killed
#                    (SIGKILL) right after its first checkpoint and rerun to resume. Resumed weights must equal
#                    the uninterrupted run's bit for bit (on CUDA, where bilinear upsampling's backward and the
#                    NLL loss have no deterministic kernel, or be within 10x the noise of two uninterrupted runs).
#   3. eval_*        the uninterrupted run's model evaluated single-scale and MS+flip on the dataset's val
#                    images (GPU_CHECK_EVAL_IMAGES of them) through emanet.engine.evaluate.evaluate, called
#                    twice: images/s cold (model loading and first kernels included) and warm.
#   4. bench_*       `emanet bench train` at the profile's configuration (paper: ResNet-101, OS 8, crop 513,
#                    batch 16 on the one GPU) in fp32, bf16 and fp16 + channels_last, compile off, then the
#                    same with compile on (synthetic batches only; they come last as compiling is slow).
#
# Parts that need CUDA print "<part>: skipped: no CUDA" on a machine without one and the others run (use
# GPU_CHECK_PROFILE=tiny there). Each part has a time limit, and the whole run keeps to GPU_CHECK_BUDGET_S
# (default 470 s): a part that would start too late is skipped, saying so (listed at the end; not a failure).
# A failing part does not stop the others, but the parts that need it are skipped naming it (the resume
# parts each need the one before, the eval parts the first training); every part appears in
# gpu_check.json with its status. The exit status is 1 if any part failed.
#
# Run it from a copy of the repository (no install needed):
#     bash benchmarks/gpu_check.sh /tmp/gpu_check          # then read /tmp/gpu_check/gpu_check.json
#     GPU_CHECK_WORK=/scratch/gc bash benchmarks/gpu_check.sh "$OUT"   # keep the work folder
# It uses $PYTHON, else .venv/bin/python, else python3; when that Python cannot import emanet it runs
# `python -m emanet.cli` with PYTHONPATH=<repo root>. Needed in that Python: torch >= 2.4 (CUDA build),
# torchvision, numpy, scipy, pillow, pyyaml, tqdm, and pytest for part 1 (pip install numpy scipy pillow
# pyyaml tqdm pytest, keeping the machine's torch). MLflow is not needed: tracking is off in every run.
#
# Knobs (environment): GPU_CHECK_PROFILE (paper), GPU_CHECK_BUDGET_S (470), GPU_CHECK_ITERATIONS (10 timed
# bench iterations), GPU_CHECK_WARMUP (3), GPU_CHECK_COMPILE_ITERATIONS (5), GPU_CHECK_EVAL_IMAGES (20),
# GPU_CHECK_IMAGE_SIZE (375,500 = min,max side), GPU_CHECK_RESUME_ITERATIONS (2), GPU_CHECK_RESUME_BATCH (8),
# GPU_CHECK_BENCH_SETS (extra --set items for every bench, space-separated, e.g. "train.batch_size=2"),
# GPU_CHECK_SKIP (parts to skip, space-separated: cuda_tests resume eval bench compile), GPU_CHECK_WORK.
set -u -o pipefail

OUT=${1:?usage: benchmarks/gpu_check.sh OUTDIR}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || { echo "gpu_check: cannot create OUTDIR $1" >&2; exit 2; }
if [ -n "${GPU_CHECK_WORK:-}" ]; then
  mkdir -p "$GPU_CHECK_WORK" && WORK=$(cd "$GPU_CHECK_WORK" && pwd) ||
    { echo "gpu_check: cannot create GPU_CHECK_WORK $GPU_CHECK_WORK" >&2; exit 2; }
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || { echo "gpu_check: mktemp -d failed" >&2; exit 2; }
  trap 'rm -rf "$WORK"' EXIT
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
rm -f "$OUT/gpu_check.json" "$OUT"/logs/*.log
mkdir -p "$WORK"/parts "$WORK"/status "$WORK"/logs
rm -f "$WORK"/parts/*.json "$WORK"/status/*.json

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import emanet" 2>/dev/null; then export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"; fi
missing=$("$PY" - <<'EOF'
import importlib.util
print(" ".join(m for m in ("torch", "torchvision", "numpy", "scipy", "PIL", "yaml", "tqdm")
               if importlib.util.find_spec(m) is None))
EOF
)
if [ -n "$missing" ]; then
  echo "gpu_check: $PY lacks: $missing (pip install them, keeping the machine's torch)" >&2
  exit 2
fi
EMANET=("$PY" -m emanet.cli)
TORCHRUN=("$PY" -m torch.distributed.run --standalone --nproc_per_node=1)

PROFILE=${GPU_CHECK_PROFILE:-paper}
BUDGET=${GPU_CHECK_BUDGET_S:-470}
ITERATIONS=${GPU_CHECK_ITERATIONS:-10}
WARMUP=${GPU_CHECK_WARMUP:-3}
COMPILE_ITERATIONS=${GPU_CHECK_COMPILE_ITERATIONS:-5}
EVAL_IMAGES=${GPU_CHECK_EVAL_IMAGES:-20}
IMAGE_SIZE=${GPU_CHECK_IMAGE_SIZE:-375,500}
RESUME_ITERATIONS=${GPU_CHECK_RESUME_ITERATIONS:-2}
RESUME_BATCH=${GPU_CHECK_RESUME_BATCH:-8}
SKIP=" ${GPU_CHECK_SKIP:-} "
DATA="$WORK/data"
START=$(date +%s)
FAILED=0
NOT_RUN=()
PARTS=(data_synth data_prepare cuda_tests resume_straight resume_straight2 resume_kill resume_rerun resume
       eval_ss eval_ms_flip eval_ms_flip_bf16 bench_fp32 bench_bf16 bench_fp16_channels_last bench_fp32_compile
       bench_bf16_compile bench_fp16_channels_last_compile)
merge() { "$PY" benchmarks/gpu_check_parts.py merge "$WORK" "$OUT" "${PARTS[@]}"; }

if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  CUDA=1; DEVICE=cuda
else
  CUDA=0; DEVICE=cpu
fi
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}  # deterministic cuBLAS (the resume part)

BASE_SETS=(--set "data.root=$DATA/prepared" --set tracking.enabled=false --set model.pretrained=null
           --set "train.device=$DEVICE")

write_status() {  # NAME JSON
  printf '%s\n' "$2" > "$WORK/status/$1.json"
}

skip() {  # NAME REASON (no double quotes or backslashes in REASON)
  echo "$1: skipped: $2"
  write_status "$1" "{\"skipped\": \"$2\"}"
  OUTCOME="was skipped ($2)"
}

knob_skips() {  # NAME: GPU_CHECK_SKIP names it or its group (resume_kill is in group resume, bench_bf16 in bench)
  local word
  for word in $SKIP; do
    case "$1" in "$word"|"${word}_"*) return 0;; esac
    if [ "$word" = compile ] && [[ "$1" == *_compile ]]; then return 0; fi
  done
  return 1
}

# part NAME CAP_SECONDS COMMAND...: run COMMAND with a time limit of CAP_SECONDS or what is left of the
# budget (minus 10 s for the merge; the command sees it as $GPU_CHECK_PART_LIMIT_S), its output in
# WORK/logs/NAME.log; the status gets rc, seconds and the limit (merge adds a failed part's log). OUTCOME
# says how it went ("passed", "failed", "was skipped (why)"), for the parts that need this one.
part() {
  local name=$1 cap=$2; shift 2
  if knob_skips "$name"; then skip "$name" "GPU_CHECK_SKIP"; return 1; fi
  local left=$(( BUDGET - ($(date +%s) - START) - 10 ))
  local limit=$(( cap < left ? cap : left ))
  if [ "$limit" -lt 15 ]; then skip "$name" "out of the ${BUDGET} s budget"; NOT_RUN+=("$name"); return 1; fi
  echo "$name: running (limit ${limit} s, log $WORK/logs/$name.log)"
  local began=$(date +%s)
  GPU_CHECK_PART_LIMIT_S=$limit timeout --kill-after=10 "$limit" "$@" > "$WORK/logs/$name.log" 2>&1
  local rc=$?
  local took=$(( $(date +%s) - began ))
  write_status "$name" "{\"rc\": $rc, \"seconds\": $took, \"limit_s\": $limit, \"timed_out\": $([ $rc -eq 124 ] || [ $rc -eq 137 ] && echo true || echo false)}"
  merge > /dev/null  # gpu_check.json as it stands, should the run be cut off
  if [ $rc -ne 0 ]; then
    FAILED=1; OUTCOME=failed
    echo "$name: FAILED (exit $rc after ${took} s); last lines of its log:"
    "$PY" benchmarks/gpu_check_parts.py log-tail "$WORK/logs/$name.log" 15 | sed 's/^/    /'
  else
    OUTCOME=passed
    echo "$name: ok (${took} s)"
  fi
  return $rc
}

# last_json_line NAME: the last line of NAME's log, when it is JSON (the part's figures), as parts/NAME.json.
last_json_line() {
  local line
  line=$(tail -n 1 "$WORK/logs/$1.log" 2>/dev/null) || return 0
  if printf '%s' "$line" | "$PY" -c "import json, sys; json.load(sys.stdin)" 2>/dev/null; then
    printf '%s\n' "$line" > "$WORK/parts/$1.json"; echo "$1: $line"
  fi
}

# chain NAME CAP COMMAND...: part, unless an earlier link of the chain did not pass (BLOCKED says which and
# how, e.g. "resume_straight failed"): then skipped naming it.
chain() {
  local name=$1
  if knob_skips "$name"; then skip "$name" "GPU_CHECK_SKIP"; BLOCKED=${BLOCKED:-"$name $OUTCOME"}; return 1; fi
  if [ -n "$BLOCKED" ]; then skip "$name" "not run: $BLOCKED"; return 1; fi
  part "$@" || BLOCKED="$name $OUTCOME"
}

# --- 0. environment and data --------------------------------------------------------------------------
"$PY" benchmarks/gpu_check_parts.py environment "$WORK/parts/environment.json" "$PROFILE"
BLOCKED=""
chain data_synth 120 "${EMANET[@]}" synth --out "$DATA/raw" --dataset voc --images-per-split "$EVAL_IMAGES" \
  --image-size "$IMAGE_SIZE"
chain data_prepare 120 "${EMANET[@]}" prepare voc --raw-dir "$DATA/raw" --out "$DATA/prepared" \
  --manifest "$DATA/raw/manifest.json" --quiet
if [ -n "$BLOCKED" ]; then
  echo "gpu_check: no dataset, nothing else can run"
  for name in "${PARTS[@]:2}"; do skip "$name" "no dataset: $BLOCKED"; done
  merge; exit 1
fi

# --- 1. CUDA tests ----------------------------------------------------------------------------------------
if [ $CUDA -eq 0 ]; then
  skip cuda_tests "no CUDA"
elif ! "$PY" -c "import pytest" 2>/dev/null; then
  skip cuda_tests "pytest is not installed in $PY"; FAILED=1
else
  part cuda_tests 150 "$PY" -m pytest -q -rs -m cuda -p no:cacheprovider tests/test_cuda.py
fi

# --- 2. torchrun, checkpoint, SIGKILL, resume -----------------------------------------------------------------
R="$WORK/resume"
rm -rf "$R"
# the run's settings, shared by its training and its evaluation (which must resolve the same configuration)
RUN_ARGS=(--experiment ema512 --profile "$PROFILE" "${BASE_SETS[@]}"
          --set "train.iterations=$RESUME_ITERATIONS" --set train.checkpoint_interval=1 --set train.log_interval=1
          --set train.deterministic=true --set "train.batch_size=$RESUME_BATCH")
TRAIN=("${TORCHRUN[@]}" -m emanet.cli train "${RUN_ARGS[@]}")
RUN="$R/killed/runs/ema512"
echo "resume: torchrun --nproc_per_node=1 ($([ $CUDA -eq 1 ] && echo nccl, SyncBatchNorm || echo gloo, the gloo global BatchNorm)), deterministic"
BLOCKED=""
chain resume_straight 150 "${TRAIN[@]}" --out "$R/straight"
MODEL_MISSING=$BLOCKED  # the eval parts need this first run's model
chain resume_straight2 150 "${TRAIN[@]}" --out "$R/straight2"
chain resume_kill 150 "$PY" benchmarks/gpu_check_parts.py kill-after-checkpoint "$RUN/checkpoints/last.pt" "$RUN" \
  -- "${TRAIN[@]}" --out "$R/killed"
last_json_line resume_kill
chain resume_rerun 150 "${TRAIN[@]}" --out "$R/killed"
chain resume 60 "$PY" benchmarks/gpu_check_parts.py compare-weights "$R/straight/runs/ema512/model.pt" \
  "$RUN/model.pt" "$R/straight2/runs/ema512/model.pt"
last_json_line resume

# --- 3. evaluation speed ---------------------------------------------------------------------------------------
EVAL=("${RUN_ARGS[@]}" --out "$R/straight")
evaluate() {  # NAME CAP PROTOCOL [--set ...]: the first uninterrupted run's model, timed
  local name=$1 cap=$2 protocol=$3; shift 3
  if knob_skips "$name"; then skip "$name" "GPU_CHECK_SKIP"
  elif [ -n "$MODEL_MISSING" ]; then skip "$name" "no trained model: $MODEL_MISSING"
  else part "$name" "$cap" "$PY" benchmarks/gpu_check_parts.py eval-speed "$WORK/parts/$name.json" "$protocol" \
    -- "${EVAL[@]}" "$@"
  fi
}
evaluate eval_ss 120 ss
evaluate eval_ms_flip 180 ms_flip
if [ $CUDA -eq 1 ]; then evaluate eval_ms_flip_bf16 120 ms_flip --set train.amp=bf16; else skip eval_ms_flip_bf16 "no CUDA"; fi

# --- 4. training benchmark ---------------------------------------------------------------------------------------
read -r -a EXTRA <<< "${GPU_CHECK_BENCH_SETS:-}"
bench() {  # NAME CAP SOURCE ITERATIONS SETS...
  local name=$1 cap=$2 source=$3 iterations=$4; shift 4
  local sets=()
  for item in "${EXTRA[@]}" "$@"; do sets+=(--set "$item"); done
  part "$name" "$cap" "${EMANET[@]}" bench train --experiment ema512 --profile "$PROFILE" "${BASE_SETS[@]}" \
    "${sets[@]}" --source "$source" --iterations "$iterations" --warmup "$WARMUP" --output "$WORK/parts/$name.json" &&
    sed -n '/^variant/,$p' "$WORK/logs/$name.log"
}
VARIANTS=("fp32:train.amp=none train.channels_last=false" "bf16:train.amp=bf16 train.channels_last=false"
          "fp16_channels_last:train.amp=fp16 train.channels_last=true")
for compile in false true; do  # eager first: compiling is slow, so the compiled variants come last
  for variant in "${VARIANTS[@]}"; do
    name=bench_${variant%%:*}$([ $compile = true ] && echo _compile); read -r -a sets <<< "${variant#*:}"
    if [ $CUDA -eq 0 ] && [[ "$name" != bench_fp32* ]]; then skip "$name" "no CUDA"; continue; fi
    if [ $compile = false ]; then
      bench "$name" 120 both "$ITERATIONS" "${sets[@]}" train.compile=false
    else
      bench "$name" 150 synthetic "$COMPILE_ITERATIONS" "${sets[@]}" train.compile=true
    fi
  done
done

merge
echo "gpu_check: $(( $(date +%s) - START )) s in all; figures in $OUT/gpu_check.json$([ $FAILED -eq 1 ] && echo "; some parts FAILED (their logs: $OUT/logs)")$([ -n "${GPU_CHECK_WORK:-}" ] && echo "; work folder $WORK")"
if [ ${#NOT_RUN[@]} -gt 0 ]; then echo "gpu_check: not run for lack of time (raise GPU_CHECK_BUDGET_S): ${NOT_RUN[*]}"; fi
exit $FAILED
