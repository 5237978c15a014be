#!/usr/bin/env bash
# benchmarks/gpu_check.sh OUTDIR: everything emanet needs checked on a GPU, in one run of at most ~8 minutes
# on one GPU (H200-class), every figure in OUTDIR/gpu_check.json.
#
#   0. environment   torch/CUDA versions, the device, the git commit; a synthetic VOC-sized dataset
#                    (`emanet synth` + `emanet prepare`, images GPU_CHECK_IMAGE_SIZE) in OUTDIR/data.
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
# A failing part does not stop the others; the exit status is 1 if any part failed.
#
# Run it from a copy of the repository (no install needed):
#     bash benchmarks/gpu_check.sh /tmp/gpu_check          # then read /tmp/gpu_check/gpu_check.json
# It uses $PYTHON, else .venv/bin/python, else python3; when that Python cannot import emanet it runs
# `python -m emanet.cli` with PYTHONPATH=<repo root>. Needed in that Python: torch >= 2.4 (CUDA build),
# torchvision, numpy, scipy, pillow, pyyaml, tqdm, and pytest for part 1 (pip install numpy scipy pillow
# pyyaml tqdm pytest, keeping the machine's torch). MLflow is not needed: tracking is off in every run.
#
# Knobs (environment): GPU_CHECK_PROFILE (paper), GPU_CHECK_BUDGET_S (470), GPU_CHECK_ITERATIONS (10 timed
# bench iterations), GPU_CHECK_WARMUP (3), GPU_CHECK_COMPILE_ITERATIONS (5), GPU_CHECK_EVAL_IMAGES (20),
# GPU_CHECK_IMAGE_SIZE (375,500 = min,max side), GPU_CHECK_RESUME_ITERATIONS (2), GPU_CHECK_RESUME_BATCH (8),
# GPU_CHECK_BENCH_SETS (extra --set items for every bench, space-separated, e.g. "train.batch_size=2"),
# GPU_CHECK_SKIP (parts to skip, space-separated: cuda_tests resume eval bench compile).
set -u -o pipefail

OUT=${1:?usage: benchmarks/gpu_check.sh OUTDIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
mkdir -p "$OUT"/parts "$OUT"/status "$OUT"/logs
OUT=$(cd "$OUT" && pwd)

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
DATA="$OUT/data"
START=$(date +%s)
FAILED=0
NOT_RUN=()

if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  CUDA=1; DEVICE=cuda
else
  CUDA=0; DEVICE=cpu
fi
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}  # deterministic cuBLAS (the resume part)

BASE_SETS=(--set "data.root=$DATA/prepared" --set tracking.enabled=false --set model.pretrained=null
           --set "train.device=$DEVICE")

write_status() {  # NAME JSON
  printf '%s\n' "$2" > "$OUT/status/$1.json"
}

skip() {  # NAME REASON
  echo "$1: skipped: $2"
  write_status "$1" "{\"skipped\": \"$2\"}"
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
# budget (minus 10 s for the merge), its output in logs/NAME.log; the status gets rc and seconds.
part() {
  local name=$1 cap=$2; shift 2
  if knob_skips "$name"; then skip "$name" "GPU_CHECK_SKIP"; return 1; fi
  local left=$(( BUDGET - ($(date +%s) - START) - 10 ))
  local limit=$(( cap < left ? cap : left ))
  if [ "$limit" -lt 15 ]; then skip "$name" "out of the ${BUDGET} s budget"; NOT_RUN+=("$name"); return 1; fi
  echo "$name: running (limit ${limit} s, log $OUT/logs/$name.log)"
  local began=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
  local rc=$?
  local took=$(( $(date +%s) - began ))
  write_status "$name" "{\"rc\": $rc, \"seconds\": $took, \"limit_s\": $limit, \"timed_out\": $([ $rc -eq 124 ] || [ $rc -eq 137 ] && echo true || echo false), \"log\": \"logs/$name.log\"}"
  if [ $rc -ne 0 ]; then
    FAILED=1
    echo "$name: FAILED (exit $rc after ${took} s); last lines of its log:"
    tail -n 15 "$OUT/logs/$name.log" | sed 's/^/    /'
  else
    echo "$name: ok (${took} s)"
  fi
  return $rc
}

# --- 0. environment and data --------------------------------------------------------------------------
"$PY" - "$OUT/parts/environment.json" "$PROFILE" <<'EOF'
import json, platform, subprocess, sys, torch
info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
        "gpus": torch.cuda.device_count(), "python": platform.python_version(), "profile": sys.argv[2],
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None,
        "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None}
open(sys.argv[1], "w").write(json.dumps(info, indent=1))
print("environment:", json.dumps(info))
EOF
part data_synth 120 "${EMANET[@]}" synth --out "$DATA/raw" --dataset voc --images-per-split "$EVAL_IMAGES" \
  --image-size "$IMAGE_SIZE" &&
part data_prepare 120 "${EMANET[@]}" prepare voc --raw-dir "$DATA/raw" --out "$DATA/prepared" \
  --manifest "$DATA/raw/manifest.json" --quiet ||
  { echo "gpu_check: no dataset, nothing else can run"; "$PY" benchmarks/gpu_check_parts.py merge "$OUT"; exit 1; }

# --- 1. CUDA tests ----------------------------------------------------------------------------------------
if [ $CUDA -eq 0 ]; then
  skip cuda_tests "no CUDA"
elif ! "$PY" -c "import pytest" 2>/dev/null; then
  skip cuda_tests "pytest is not installed in $PY"; FAILED=1
else
  part cuda_tests 150 "$PY" -m pytest -q -rs -m cuda -p no:cacheprovider tests/test_cuda.py
fi

# --- 2. torchrun, checkpoint, SIGKILL, resume -----------------------------------------------------------------
R="$OUT/resume"
rm -rf "$R"
TRAIN=("${TORCHRUN[@]}" -m emanet.cli train --experiment ema512 --profile "$PROFILE" "${BASE_SETS[@]}"
       --set "train.iterations=$RESUME_ITERATIONS" --set train.checkpoint_interval=1 --set train.log_interval=1
       --set train.deterministic=true --set "train.batch_size=$RESUME_BATCH")
RUN="$R/killed/runs/ema512"
echo "resume: torchrun --nproc_per_node=1 ($([ $CUDA -eq 1 ] && echo nccl, SyncBatchNorm || echo gloo, the gloo global BatchNorm)), deterministic"
if part resume_straight 150 "${TRAIN[@]}" --out "$R/straight" &&
   part resume_straight2 150 "${TRAIN[@]}" --out "$R/straight2" &&
   part resume_kill 150 "$PY" benchmarks/gpu_check_parts.py kill-after-checkpoint "$RUN/checkpoints/last.pt" "$RUN" \
     -- "${TRAIN[@]}" --out "$R/killed" &&
   part resume_rerun 150 "${TRAIN[@]}" --out "$R/killed"; then
  part resume 60 "$PY" benchmarks/gpu_check_parts.py compare-weights "$R/straight/runs/ema512/model.pt" \
    "$RUN/model.pt" "$R/straight2/runs/ema512/model.pt"
  tail -n 1 "$OUT/logs/resume_kill.log" > "$OUT/parts/resume_kill.json"
  tail -n 1 "$OUT/logs/resume.log" > "$OUT/parts/resume.json"
  cat "$OUT/parts/resume_kill.json" "$OUT/parts/resume.json"
fi

# --- 3. evaluation speed ---------------------------------------------------------------------------------------
if [ -f "$R/straight/runs/ema512/model.pt" ]; then
  EVAL=(--experiment ema512 --profile "$PROFILE" "${BASE_SETS[@]}" --set "train.iterations=$RESUME_ITERATIONS"
        --set train.checkpoint_interval=1 --set train.log_interval=1 --set train.deterministic=true
        --set "train.batch_size=$RESUME_BATCH" --out "$R/straight")
  part eval_ss 120 "$PY" benchmarks/gpu_check_parts.py eval-speed "$OUT/parts/eval_ss.json" ss -- "${EVAL[@]}"
  part eval_ms_flip 180 "$PY" benchmarks/gpu_check_parts.py eval-speed "$OUT/parts/eval_ms_flip.json" ms_flip \
    -- "${EVAL[@]}"
  if [ $CUDA -eq 1 ]; then
    part eval_ms_flip_bf16 120 "$PY" benchmarks/gpu_check_parts.py eval-speed "$OUT/parts/eval_ms_flip_bf16.json" \
      ms_flip -- "${EVAL[@]}" --set train.amp=bf16
  else
    skip eval_ms_flip_bf16 "no CUDA"
  fi
else
  skip eval_ss "no trained model (the resume part failed)"; skip eval_ms_flip "no trained model"
fi

# --- 4. training benchmark ---------------------------------------------------------------------------------------
read -r -a EXTRA <<< "${GPU_CHECK_BENCH_SETS:-}"
bench() {  # NAME CAP SOURCE ITERATIONS SETS...
  local name=$1 cap=$2 source=$3 iterations=$4; shift 4
  local sets=()
  for item in "${EXTRA[@]}" "$@"; do sets+=(--set "$item"); done
  part "$name" "$cap" "${EMANET[@]}" bench train --experiment ema512 --profile "$PROFILE" "${BASE_SETS[@]}" \
    "${sets[@]}" --source "$source" --iterations "$iterations" --warmup "$WARMUP" --output "$OUT/parts/$name.json" &&
    sed -n '/^variant/,$p' "$OUT/logs/$name.log"
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

"$PY" benchmarks/gpu_check_parts.py merge "$OUT"
echo "gpu_check: $(( $(date +%s) - START )) s in all; figures in $OUT/gpu_check.json$([ $FAILED -eq 1 ] && echo '; some parts FAILED')"
if [ ${#NOT_RUN[@]} -gt 0 ]; then echo "gpu_check: not run for lack of time (raise GPU_CHECK_BUDGET_S): ${NOT_RUN[*]}"; fi
exit $FAILED
