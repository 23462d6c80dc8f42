#!/usr/bin/env bash
# The prepared GPU check: on a machine with a GPU and its own python3 (torch, timm, transformers,
# opencv; no ROS: only the ROS-free parts run, imported from this checkout through PYTHONPATH), in
# one go and within a time budget (default 450 s, under 8 minutes):
#
#   summary.txt         the machine (python, torch, GPU), then one line per step: ok / FAILED /
#                       TIMED OUT / skipped, its time, and at the end the overall verdict
#   tests.txt           the CUDA tests, and the host-side tests whose exactness depends on the
#                       torch build (bilinear_argmax's emulation of the CPU kernel, staging)
#   model.txt           benchmarks/model.py: our model against transformers' for one variant per
#                       network in dpt_ros.model.VARIANTS, fp32 and bf16, eager and cuda_graph
#   engine.txt          benchmarks/engine.py: engine (infer + host copies) and pipeline (every
#                       output of a 640x480 frame) for the same variants, fp32 and bf16, eager and
#                       cuda_graph, and the 4-camera batching comparison at engine level
#   model_compile.txt   model.py with torch_compile (cold compiles: gets what the budget leaves)
#   engine_compile.txt  engine.py with torch_compile
#
# Variants come from dpt_ros.model.VARIANTS, one per backbone (a new network is checked without
# changing this script).
# Every step writes its table as it goes: a step stopped by the budget leaves the rows it finished.
#
#   benchmarks/gpu_check.sh OUT_DIR [--device cuda|cpu] [--quick] [--budget-s SECONDS] [--with-compile] [--json]
#
#   --device cpu --quick   the rehearsal on a machine without a GPU: dpt_tiny, fp32, a few runs
#                          (the CUDA tests skip, cuda_graph falls back to eager); torch_compile steps
#                          only with --with-compile (a cold CPU compile takes minutes)
#   --json                 also write model.json / engine.json ... next to the tables
#   PYTHON=...             the interpreter (default: python3)
#
# Exit status: 0 every step ran and passed; 1 a step failed; 2 bad arguments or environment;
# 3 nothing failed but the budget stopped or skipped a step (the tables are partial).
set -u

usage() {
  sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed -e '/^set -u/d' -e 's/^# \{0,1\}//'
}

die() {
  echo "gpu_check: $*" >&2
  exit 2
}

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEVICE=cuda
QUICK=0
WITH_COMPILE=0
JSON=0
BUDGET=""
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) [ $# -ge 2 ] || die "--device needs a value (cuda or cpu)"; DEVICE="$2"; shift 2 ;;
    --device=*) DEVICE="${1#*=}"; shift ;;
    --budget-s) [ $# -ge 2 ] || die "--budget-s needs a number of seconds"; BUDGET="$2"; shift 2 ;;
    --budget-s=*) BUDGET="${1#*=}"; shift ;;
    --quick) QUICK=1; shift ;;
    --with-compile) WITH_COMPILE=1; shift ;;
    --json) JSON=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [ -z "$OUT" ] || die "one output folder only (got '$OUT' and '$1')"; OUT="$1"; shift ;;
  esac
done
[ -n "$OUT" ] || die "give the folder for the tables: benchmarks/gpu_check.sh OUT_DIR [options] (see --help)"
case "$DEVICE" in cuda|cpu) ;; *) die "--device must be cuda or cpu, got '$DEVICE'" ;; esac
if [ -z "$BUDGET" ]; then
  BUDGET=450
fi
case "$BUDGET" in ''|*[!0-9]*) die "--budget-s must be a whole number of seconds, got '$BUDGET'" ;; esac
[ "$BUDGET" -ge 60 ] || die "--budget-s must be at least 60"
mkdir -p "$OUT" 2>/dev/null && [ -w "$OUT" ] || die "cannot write to '$OUT'"
OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || die "no '$PY' on PATH (set PYTHON=...)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
cd "$REPO" || die "cannot enter $REPO"
"$PY" -c "import torch, timm, transformers, cv2, numpy" 2>/dev/null \
  || die "$PY lacks one of torch, timm, transformers, opencv, numpy"
if [ "$DEVICE" = cuda ]; then
  "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || die "--device cuda, but torch.cuda.is_available() is False with $PY (use --device cpu to rehearse)"
fi

START=$(date +%s)
DEADLINE=$((START + BUDGET))
SUMMARY="$OUT/summary.txt"
FAILED=0
PARTIAL=0

{
  echo "# gpu_check $(date '+%Y-%m-%d %H:%M:%S'): device $DEVICE, quick $QUICK, budget ${BUDGET} s, $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'no git') in $REPO"
  "$PY" - <<'EOF'
import platform, torch, timm, transformers, cv2, numpy
print(f"# python {platform.python_version()} ({platform.machine()}), torch {torch.__version__}, timm {timm.__version__}, "
      f"transformers {transformers.__version__}, opencv {cv2.__version__}, numpy {numpy.__version__}, "
      f"{torch.get_num_threads()} CPU threads, cpu capability {torch.backends.cpu.get_cpu_capability()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"# GPU {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, CUDA {torch.version.cuda}")
EOF
} > "$SUMMARY" 2>&1

# run_step NAME CAP_SECONDS COMMAND...: output to OUT/NAME.txt, limited by the cap and the budget left.
run_step() {
  local name="$1" cap="$2"
  shift 2
  local now left limit started rc took status
  now=$(date +%s)
  left=$((DEADLINE - now))
  if [ "$left" -lt 30 ]; then
    status="skipped (budget spent)"
    PARTIAL=1
    printf '%-16s %s\n' "$name" "$status" | tee -a "$SUMMARY"
    return
  fi
  limit=$((cap < left ? cap : left))
  started=$(date +%s)
  timeout --signal=INT --kill-after=15 "$limit" "$@" > "$OUT/$name.txt" 2>&1
  rc=$?
  took=$(($(date +%s) - started))
  if [ "$rc" -eq 0 ]; then
    status="ok"
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    status="TIMED OUT after ${limit} s (the rows finished so far are in $name.txt)"
    PARTIAL=1
  else
    status="FAILED (exit $rc; see $name.txt)"
    FAILED=1
  fi
  printf '%-16s %-8s %s\n' "$name" "${took} s" "$status" | tee -a "$SUMMARY"
}

json() {  # json NAME: the --json argument of a benchmark when --json was given
  [ "$JSON" = 1 ] && echo "--json $OUT/$1.json"
}

if [ "$QUICK" = 1 ]; then
  VARIANTS=dpt_tiny
  PRECISIONS=fp32
  MODEL_RUNS=(--quick)
  ENGINE_RUNS=(--quick --cameras 2)
else
  # One variant per network (the metric fine-tunings run their relative twin's network and only
  # cost budget): DPT-Large, -Hybrid, -Base and Depth Anything V2 S/B/L today.
  VARIANTS=$("$PY" - <<'EOF'
from dpt_ros.model import VARIANTS
backbones, names = set(), []
for name, spec in VARIANTS.items():
    if not name.endswith("_tiny") and spec.backbone not in backbones:
        backbones.add(spec.backbone)
        names.append(name)
print(",".join(names))
EOF
) || die "cannot list the variants with $PY"
  PRECISIONS=fp32,bf16
  MODEL_RUNS=(--runs 30 --warmup 5)
  ENGINE_RUNS=(--runs 30 --warmup 5 --cameras 4)
fi
TEST_FILES=(test/test_inference.py test/test_model_runner.py test/test_pipeline.py test/test_geometry.py test/test_cloud.py)

# shellcheck disable=SC2046  # json expands to two words or none
run_step tests 150 bash -c "\"$PY\" -m pytest -q -rs -p no:cacheprovider test/test_host_transfer.py test/test_bilinear_argmax.py \
  && \"$PY\" -m pytest -q -rs -p no:cacheprovider -k cuda ${TEST_FILES[*]}"
# shellcheck disable=SC2046
run_step model 150 "$PY" benchmarks/model.py --device "$DEVICE" --variants "$VARIANTS" --precisions "$PRECISIONS" \
  --batches 1 "${MODEL_RUNS[@]}" --compile eager,cuda_graph $(json model)
# shellcheck disable=SC2046
run_step engine 150 "$PY" benchmarks/engine.py --device "$DEVICE" --variants "$VARIANTS" --precisions "$PRECISIONS" \
  "${ENGINE_RUNS[@]}" --compile eager,cuda_graph $(json engine)
if [ "$QUICK" = 0 ] || [ "$WITH_COMPILE" = 1 ]; then
  half=$(((DEADLINE - $(date +%s)) / 2))
  # shellcheck disable=SC2046
  run_step model_compile "$half" "$PY" benchmarks/model.py --device "$DEVICE" --variants "$VARIANTS" \
    --precisions "$PRECISIONS" --batches 1 "${MODEL_RUNS[@]}" --compile torch_compile $(json model_compile)
  # shellcheck disable=SC2046
  run_step engine_compile "$BUDGET" "$PY" benchmarks/engine.py --device "$DEVICE" --variants "$VARIANTS" \
    --precisions "$PRECISIONS" "${ENGINE_RUNS[@]}" --cameras 0 --compile torch_compile $(json engine_compile)
else
  printf '%-16s %s\n' "model_compile" "not run (--quick without --with-compile)" | tee -a "$SUMMARY"
  printf '%-16s %s\n' "engine_compile" "not run (--quick without --with-compile)" | tee -a "$SUMMARY"
fi

total=$(($(date +%s) - START))
if [ "$FAILED" = 1 ]; then
  verdict="FAILED"; code=1
elif [ "$PARTIAL" = 1 ]; then
  verdict="PARTIAL (the budget stopped or skipped a step)"; code=3
else
  verdict="ok"; code=0
fi
echo "# total ${total} s of ${BUDGET} s: $verdict; tables in $OUT" | tee -a "$SUMMARY"
exit "$code"
