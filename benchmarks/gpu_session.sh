#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (issue #14, "the GPU path, proven").
#
# It runs, in order, each step under its own `timeout`:
#   (a) environment: nvidia-smi, Python / torch / CUDA / cuDNN versions  -> $OUT/gpu_env.txt
#   (b) the gpu test subset: pytest -m gpu tests/gpu                       -> $OUT/gpu_tests.log
#   (c) `resnets bench` of resnet20, resnet56, resnet50 with torchvision   -> $OUT/bench_gpu.jsonl
#       (the tests write these records; the CLI fills in any model they did not)
#   (d) the full-schedule CIFAR reproduction (`experiment paper-cifar`) continued on the GPU for
#       the time left, stopped by SIGTERM (every run saves), summary rebuilt; the changed files
#       of results/paper-cifar                                             -> $OUT/paper-cifar.tar.gz*
# and keeps its own step log in $OUT/session.log. At most 8 files come back from $OUT, 16 MiB
# each and 64 MiB in all: 4 logs/records plus the archive, split into 15 MiB parts when larger.
#
# How the session calls it (the device tool's `run`; see the tool library's device/README.md):
#   1. Here, once: stop the local CPU reproduction of results/paper-cifar (SIGTERM to its
#      `resnets experiment` process; every run saves), so that the copy that travels is the
#      latest state and nothing here writes those files while the GPU continues them.
#   2. Here, once: the data does not travel from ../shared, so carry it inside the checkout:
#        echo /.gpu-carry/ >> .git/info/exclude
#        mkdir -p .gpu-carry && cp ../shared/data/cifar10-jpg-train.tar.xz .gpu-carry/
#   3. One call:  run(command="bash benchmarks/gpu_session.sh", carry=[".gpu-carry"],
#                     timeout_s=600)
#      BUDGET (default 540 s) bounds the whole script below the 600 s limit; the training gets
#      what the steps before it leave, minus RESERVE_SECONDS for saving and packing. To keep
#      device time for a second try, run with e.g. `BUDGET=420 bash benchmarks/gpu_session.sh`.
#      Set TRAIN_SECONDS to fix the training time instead (capped by the budget).
#   4. Unpack what comes back (files_at is the folder the reply names), in the repo root:
#        cat FILES_AT/paper-cifar.tar.gz* | tar xzf - -C <repo root>
#        mkdir -p benchmarks/results && cp FILES_AT/gpu_tests.log FILES_AT/gpu_env.txt \
#            FILES_AT/bench_gpu.jsonl benchmarks/results/    # names: add the GPU's, e.g. -h200
#      then commit the results/paper-cifar files (their .gitignore keeps the rest out) and the
#      logs, naming the GPU (gpu_env.txt has it).
#
# Try it on a CPU first: `DRY_RUN=1 bash benchmarks/gpu_session.sh` runs every step on the CPU
# with tiny settings into a temporary OUT (the gpu tests then all skip, saying so), continues a
# copy of results/paper-cifar/resnet20-seed0 in a temporary folder for the ~40 s its budget
# leaves, and checks that the archive unpacks. It never writes into results/paper-cifar.
# About 100 s on 2 busy cores; PY=..., DATA=... point it at another Python or data path.

set -u -o pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DRY_RUN=${DRY_RUN:-0}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gpu-session.XXXXXX")
OUT=${OUT:-$TMP/out}
mkdir -p "$OUT"
LOG=$OUT/session.log
START=$SECONDS

if [ "$DRY_RUN" = 1 ]; then
    BUDGET=${BUDGET:-105}
    RESERVE_SECONDS=${RESERVE_SECONDS:-25}
    TEST_TIMEOUT=${TEST_TIMEOUT:-60}
    BENCH_MODELS=${BENCH_MODELS:-resnet20}  # the same loop as for three, on a slow shared CPU
    export OMP_NUM_THREADS=1
else
    BUDGET=${BUDGET:-540}
    RESERVE_SECONDS=${RESERVE_SECONDS:-100}
    TEST_TIMEOUT=${TEST_TIMEOUT:-300}
fi
BENCH_MODELS=${BENCH_MODELS:-resnet20 resnet56 resnet50}
NETS=${NETS:-resnet20,plain20,resnet56,plain56,resnet32,resnet44,resnet110}
PARALLEL=${PARALLEL:-7}
DATA=${DATA:-../shared/data/cifar10-jpg-train.tar.xz}
CARRIED_DATA=$ROOT/.gpu-carry/cifar10-jpg-train.tar.xz
MAX_BACK_MIB=${MAX_BACK_MIB:-58}  # raw size of the archived files; the parts stay < 64 MiB
PART_MIB=${PART_MIB:-15}  # each file back must stay under 16 MiB

say() { echo "[gpu_session $(date -u +%H:%M:%S) +$((SECONDS - START))s] $*" | tee -a "$LOG"; }
left() { echo $((BUDGET - (SECONDS - START))); }

# ------------------------------------------------------------------ Python and dependencies
if [ -z "${PY:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi
fi
# The checkout's own code, whether or not the package is installed (no `resnets` script
# needed: every step calls `python -m resnets`, and child processes inherit the path).
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

missing_modules() {  # import name=pip name, for those not installed (found, not imported)
    "$PY" - "$@" <<'EOF'
import importlib.util, sys
for spec in sys.argv[1:]:
    module, _, package = spec.partition("=")
    if importlib.util.find_spec(module) is None:
        print(package or module)
EOF
}

install_missing() {  # what is not installed: from carried wheels (.whl), else the registry
    local names
    names=$(missing_modules "$@" | tr '\n' ' ')
    [ -z "${names// }" ] && return 0
    say "missing Python packages: $names"
    if [ -d "$ROOT/.whl" ]; then
        timeout 120 "$PY" -m pip install -q --no-index --find-links "$ROOT/.whl" $names \
            >>"$LOG" 2>&1 && return 0
    fi
    timeout 120 "$PY" -m pip install -q $names >>"$LOG" 2>&1 \
        || say "could not install $names (no registry here?); the steps that need them fail or skip"
}

say "repo $ROOT, python $PY, OUT $OUT, budget ${BUDGET}s, dry run $DRY_RUN"
install_missing torch torchvision numpy safetensors tqdm tensorboard matplotlib PIL=pillow \
    pytest hypothesis onnx onnxruntime onnxscript

# ------------------------------------------------------------------ data, decoded once
# The data may not travel from ../shared: fall back to the copy carried in .gpu-carry.
if [ ! -f "$DATA" ] && [ -f "$CARRIED_DATA" ]; then
    mkdir -p "$(dirname "$DATA")" 2>/dev/null && cp "$CARRIED_DATA" "$DATA" 2>/dev/null \
        || DATA=$CARRIED_DATA
fi
if [ "$DRY_RUN" = 1 ]; then
    # Private probe cache (precision choice), the user's decoded data if it is there.
    export RESNETS_CACHE=$TMP/cache
    mkdir -p "$RESNETS_CACHE"
    cp "$HOME/.cache/resnets/precision-probe.json" "$RESNETS_CACHE/" 2>/dev/null || true
    DATA_CACHE=${DATA_CACHE:-$HOME/.cache/resnets}
else
    export RESNETS_CACHE=${RESNETS_CACHE:-/tmp/resnets-cache}
    DATA_CACHE=${DATA_CACHE:-$RESNETS_CACHE}
fi
DECODE_PID=
if [ -f "$DATA" ]; then
    # In the background: the CPU decodes the JPEGs while the GPU runs the tests.
    ( t0=$SECONDS
      timeout 400 "$PY" -c "import sys; from resnets.data import load_image_set
s = load_image_set(sys.argv[1], split='train', cache_dir=sys.argv[2])
print('decoded', tuple(s.images.shape))" "$DATA" "$DATA_CACHE" >>"$TMP/decode.log" 2>&1
      echo "decode exit $? after $((SECONDS - t0)) s" >>"$TMP/decode.log" ) &
    DECODE_PID=$!
else
    say "no data at $DATA (nor $CARRIED_DATA): step (d) will be skipped"
fi

# ------------------------------------------------------------------ (a) environment
say "(a) environment -> gpu_env.txt"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -a)"
    echo "commit: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "--- nvidia-smi"
    timeout 30 nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    echo "--- python"
    timeout 60 "$PY" - <<'EOF' 2>&1
import platform, sys
import torch
print("python", sys.version.split()[0], platform.machine())
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
      torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
print("cuda available", torch.cuda.is_available())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"device {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, sm {p.major}.{p.minor}, "
          f"{p.multi_processor_count} SMs")
import importlib
for name in ("torchvision", "numpy", "safetensors", "onnx", "onnxruntime", "onnxscript",
             "triton", "pytest", "hypothesis"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as e:
        print(name, "missing:", type(e).__name__)
from resnets.device import cpu_model
print("cpu", cpu_model())
EOF
} >"$OUT/gpu_env.txt" 2>&1
grep -E "^(torch|device 0|cuda available)" "$OUT/gpu_env.txt" | tee -a "$LOG"
CUDA=0
grep -q "^cuda available True" "$OUT/gpu_env.txt" && CUDA=1
if [ "$DRY_RUN" = 1 ]; then DEVICE=cpu; elif [ "$CUDA" = 1 ]; then DEVICE=cuda; else
    say "no CUDA device on this machine: use DRY_RUN=1 for a CPU rehearsal"; DEVICE=cpu; fi

# ------------------------------------------------------------------ (b) the gpu tests
say "(b) pytest -m gpu tests/gpu (timeout ${TEST_TIMEOUT}s) -> gpu_tests.log"
if [ "$CUDA" != 1 ]; then
    echo "no CUDA device: every gpu test skips (run for the collection only)" \
        | tee "$OUT/gpu_tests.log" | tee -a "$LOG"
fi
# cuBLAS setting for the deterministic (exact-resume) test; tests/gpu/conftest.py sets it too.
RESNETS_GPU_OUT=$OUT CUBLAS_WORKSPACE_CONFIG=:4096:8 timeout -k 20 "$TEST_TIMEOUT" "$PY" -m pytest -m gpu tests/gpu -q -rfEs \
    --durations=15 -p no:cacheprovider 2>&1 | tee -a "$OUT/gpu_tests.log" | tail -n 5
code=${PIPESTATUS[0]}
say "pytest exit $code$([ "$code" = 124 ] && echo ': timed out')"

# ------------------------------------------------------------------ (c) bench records
say "(c) bench -> bench_gpu.jsonl"
touch "$OUT/bench_gpu.jsonl"
if [ "$DEVICE" = cuda ]; then
    BENCH_ARGS=(--device cuda --precision bf16)
else
    BENCH_ARGS=(--device cpu --precision fp32 --batch-size 2 --steps 1 --warmup 0 --rounds 1
                --image-size 32)
fi
for model in $BENCH_MODELS; do
    if grep -q "\"model\": \"$model\"" "$OUT/bench_gpu.jsonl"; then
        say "  $model: recorded by the tests"
        continue
    fi
    if timeout 180 "$PY" -m resnets bench --model "$model" "${BENCH_ARGS[@]}" --json \
            >"$TMP/bench_$model.txt" 2>&1; then
        tail -n 1 "$TMP/bench_$model.txt" >>"$OUT/bench_gpu.jsonl"
        say "  $model: $(grep -m1 'img/s' "$TMP/bench_$model.txt")"
    else
        say "  $model: bench failed: $(tail -n 3 "$TMP/bench_$model.txt" | tr '\n' ' ')"
    fi
done
"$PY" - "$OUT/bench_gpu.jsonl" <<'EOF' 2>&1 | tee -a "$LOG"
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    tv = r.get("torchvision") or {}
    ratio = f", torchvision ratio {tv['ratio']:.2f}" if tv else ""
    print(f"  {r['model']} {r['precision']} on {r['device_name']}: {r['img_per_s']:.0f} img/s"
          f"{ratio}")
EOF

# ------------------------------------------------------------------ (d) paper-cifar training
if [ "$DRY_RUN" = 1 ]; then
    # A copy of one run, so that the rehearsal continues a real run without touching it.
    TAR_BASE=$TMP/root
    EXP_OUT=$TAR_BASE/results/paper-cifar
    mkdir -p "$EXP_OUT"
    NETS=resnet20
    PARALLEL=1
    src=$ROOT/results/paper-cifar/resnet20-seed0
    if [ -f "$src/last.safetensors" ]; then
        mkdir -p "$EXP_OUT/resnet20-seed0"
        cp "$src"/{config.json,metrics.jsonl,last.safetensors,best.safetensors} \
            "$EXP_OUT/resnet20-seed0/" 2>>"$LOG"
    fi
    EXP_ARGS=(--device cpu)
else
    TAR_BASE=$ROOT
    EXP_OUT=results/paper-cifar
    EXP_ARGS=()
fi
EXPERIMENT=("$PY" -m resnets experiment paper-cifar --out "$EXP_OUT" --data "$DATA" --nets "$NETS"
            --cache-dir "$DATA_CACHE" "${EXP_ARGS[@]}")

if [ -n "$DECODE_PID" ]; then
    say "(d) waiting for the data decode"
    wait "$DECODE_PID"
    tee -a "$LOG" <"$TMP/decode.log"
fi
budget_left=$(( $(left) - RESERVE_SECONDS ))
TRAIN_SECONDS=${TRAIN_SECONDS:-$budget_left}
[ "$TRAIN_SECONDS" -gt "$budget_left" ] && TRAIN_SECONDS=$budget_left
touch "$TMP/before-training"
sleep 1  # file times: what training writes is strictly newer than the marker
if [ ! -f "$DATA" ]; then
    say "(d) skipped: no data"
elif [ "$TRAIN_SECONDS" -lt 20 ]; then
    say "(d) skipped: only ${TRAIN_SECONDS}s left for training"
else
    say "(d) experiment paper-cifar ($NETS, $PARALLEL at a time) for ${TRAIN_SECONDS}s, then SIGTERM"
    timeout -s TERM -k 90 "$TRAIN_SECONDS" "${EXPERIMENT[@]}" --parallel "$PARALLEL" --quiet \
        >"$TMP/experiment.log" 2>&1
    code=$?
    tail -n 25 "$TMP/experiment.log" | tee -a "$LOG"
    say "experiment exit $code$([ "$code" = 124 ] && echo ': stopped by the timeout, as planned')"
    for f in "$EXP_OUT"/*.log; do  # each worker's last lines (the logs stay here)
        [ -f "$f" ] && { echo "--- $f"; tail -n 6 "$f"; } >>"$LOG"
    done
    timeout 120 "${EXPERIMENT[@]}" --summary-only >"$TMP/summary.log" 2>&1
    say "summary-only exit $?: $(tail -n 2 "$TMP/summary.log" | tr '\n' ' ')"
fi

# ------------------------------------------------------------------ pack what changed
LIST=$TMP/files.txt
: >"$LIST"
if [ -d "$EXP_OUT" ]; then
    (cd "$TAR_BASE" && find results/paper-cifar -newer "$TMP/before-training" -type f \
        \( -name config.json -o -name metrics.jsonl -o -name curves.png \
           -o -name last.safetensors -o -name best.safetensors -o -name final.safetensors \
           -o -name summary.json -o -name table.md -o -name degradation.png \) \
        -not -path "*/tensorboard/*" | sort >"$LIST")
fi
size_mib() { (cd "$TAR_BASE" && xargs -r -d '\n' du -cm <"$1" | tail -n 1 | cut -f1); }
if [ -s "$LIST" ] && [ "$(size_mib "$LIST")" -gt "$MAX_BACK_MIB" ]; then
    # Too much to come back: runs still training keep their state (last), not their best.
    (cd "$TAR_BASE" && while read -r f; do
        if [ "${f##*/}" = best.safetensors ] && grep -qx "${f%/*}/last.safetensors" "$LIST"; then
            echo "$f"; fi; done <"$LIST") >"$TMP/dropped.txt"
    grep -vxF -f "$TMP/dropped.txt" "$LIST" >"$LIST.kept"; mv "$LIST.kept" "$LIST"
    say "over ${MAX_BACK_MIB} MiB: left out $(wc -l <"$TMP/dropped.txt") best.safetensors of unfinished runs"
    [ "$(size_mib "$LIST")" -gt "$MAX_BACK_MIB" ] \
        && say "WARNING: still over ${MAX_BACK_MIB} MiB: some archive parts may not come back"
fi
if [ -s "$LIST" ]; then
    say "packing $(wc -l <"$LIST") files, $(size_mib "$LIST") MiB:"
    sed 's/^/    /' "$LIST" >>"$LOG"
    (cd "$TAR_BASE" && timeout 120 tar czf - -T "$LIST") \
        | split -b "${PART_MIB}m" -d -a 1 - "$OUT/paper-cifar.tar.gz."
    parts=("$OUT"/paper-cifar.tar.gz.*)
    if [ "${#parts[@]}" = 1 ]; then mv "${parts[0]}" "$OUT/paper-cifar.tar.gz"; fi
    ls -l "$OUT" | tee -a "$LOG"
    [ "$(ls "$OUT" | wc -l)" -gt 8 ] && say "WARNING: more than 8 files in OUT; only 8 come back"
else
    say "nothing changed under $EXP_OUT: no archive"
fi

if [ "$DRY_RUN" = 1 ] && [ -s "$LIST" ]; then
    mkdir -p "$TMP/unpack"
    if cat "$OUT"/paper-cifar.tar.gz* | tar xzf - -C "$TMP/unpack"; then
        say "dry run: archive unpacks to $(cd "$TMP/unpack" && find . -type f | wc -l) files under results/paper-cifar"
    else
        say "dry run: the archive does NOT unpack"
    fi
fi
say "done in $((SECONDS - START))s; OUT=$OUT ($(ls "$OUT" | wc -l) files)"
