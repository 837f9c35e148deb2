#!/usr/bin/env bash
# The GPU check: run ON the lent GPU machine (the device tool runs it in the repository root), one or more
# stages per call, each well under the tool's 10 minutes a command:
#
#   bash scripts/gpu_check.sh compare     the training benchmark at polyglot-ko-1.3b shape: the plain recipe and
#                                         each speed option for 3 epochs (--compare), within COMPARE_BUDGET s
#   bash scripts/gpu_check.sh suite       python -m pytest -q (the whole suite), within SUITE_TIMEOUT s
#   bash scripts/gpu_check.sh full        the fastest combination `compare` found, for the recipe's 60 epochs
#                                         or as many as FULL_BUDGET s allow (the rest is projected)
#   bash scripts/gpu_check.sh --cpu-dry-run [stages]   the same logic here on the CPU: tiny shape, 1-2 epochs
#
# What the machine lacks comes as wheels (scripts/fetch_gpu_wheels.sh, here): each call carries the folders it
# names, and they are collected in /tmp/carried, which outlives a call while the machine stays warm (30 s).
# The plan that fits a session's 15 minutes of device time (docs/gpu.md has the figures it comes from):
#   call 1: carry [".whl", ".whl-unsloth"]  bash scripts/gpu_check.sh compare full
#   call 2: carry [".whl-bnb"]              RUN_TESTS=0 bash scripts/unsloth_gpu_check.sh; bash scripts/gpu_check.sh suite
# The suite then runs without Kiwi (its chat-memory tests fail on the import): kiwipiepy_model is 88 MB, cut in
# two (.whl-kiwi-1, .whl-kiwi-2), and joined once both halves have come, which takes two more calls.
# Results go to $OUT, at most 8 files: env.txt, compare.{txt,csv,json}, pytest.txt, full.{txt,csv,json}.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/carried_wheels.sh
. scripts/carried_wheels.sh

dry_run=0
stages=()
for argument in "$@"; do
    case $argument in
    --cpu-dry-run) dry_run=1 ;;
    compare|suite|full) stages+=("$argument") ;;
    *) echo "usage: bash scripts/gpu_check.sh [--cpu-dry-run] [compare] [suite] [full]" >&2; exit 2 ;;
    esac
done
[ ${#stages[@]} -eq 0 ] && stages=(compare suite full)

if [ $dry_run = 1 ]; then
    PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
    SHAPE=${SHAPE:-tiny}
    COMPARE_EPOCHS=${COMPARE_EPOCHS:-1}
    FULL_EPOCHS=${FULL_EPOCHS:-2}
    COMPARE_BUDGET=${COMPARE_BUDGET:-120}
    FULL_BUDGET=${FULL_BUDGET:-120}
    SUITE_TIMEOUT=${SUITE_TIMEOUT:-300}
    SUITE_ARGS=${SUITE_ARGS:-tests/test_benchmark_training.py}
    BENCH_ARGS=${BENCH_ARGS:---variants padding-free,test-one-batch,static-cache}
    DATASET=${DATASET:-/tmp/gpu_check_dry_run/small.csv}  # 24 train and 6 valid rows of the real one
    SITE=${SITE:-/tmp/gpu_check_dry_run/site}
    CARRIED=${CARRIED:-/tmp/gpu_check_dry_run/carried}
    KEEP=${KEEP:-/tmp/gpu_check_dry_run/keep}
    if [ -z "${OUT:-}" ]; then OUT=$(mktemp -d /tmp/gpu_check_out.XXXXXX); fi
    # The wheels are the GPU machine's (Python 3.12): installed as for it, into a folder this run leaves aside.
    install_tags=("${GPU_MACHINE_TAGS[@]}")
else
    PYTHON=${PYTHON:-python3}
    SHAPE=${SHAPE:-polyglot-ko-1.3b}
    COMPARE_EPOCHS=${COMPARE_EPOCHS:-3}
    FULL_EPOCHS=${FULL_EPOCHS:-60}
    COMPARE_BUDGET=${COMPARE_BUDGET:-240}  # the warm-up and 4 variants at 3 epochs (H200, 2026-11-26: 30-65 s each)
    FULL_BUDGET=${FULL_BUDGET:-270}  # 60 epochs need under 4.5 s each to fit
    SUITE_TIMEOUT=${SUITE_TIMEOUT:-240}
    SUITE_ARGS=${SUITE_ARGS:-}
    BENCH_ARGS=${BENCH_ARGS:-}
    DATASET=${DATASET:-}  # empty: the project's dataset
    SITE=${SITE:-/tmp/site}
    CARRIED=${CARRIED:-/tmp/carried}
    KEEP=${KEEP:-/tmp/gpu_check}  # what a later call's stage reads (the compare's summary): $OUT is emptied
    install_tags=()
    if [ -z "${OUT:-}" ]; then echo "error: OUT is unset: run this through the device tool" >&2; exit 2; fi
fi
mkdir -p "$OUT" "$SITE" "$CARRIED" "$KEEP"
if [ -n "$DATASET" ] && [ ! -f "$DATASET" ]; then
    mkdir -p "$(dirname "$DATASET")"
    "$PYTHON" - "$DATASET" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open("llm/OhLoRA_fine_tuning.csv", encoding="utf-8", newline="")))
small = [r for r in rows if r["data_type"] == "train"][:24] + [r for r in rows if r["data_type"] == "valid"][:6]
with open(sys.argv[1], "w", encoding="utf-8", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(small)
EOF
fi
dataset_args=()
[ -n "$DATASET" ] && dataset_args=(--dataset "$DATASET")
export TQDM_DISABLE=1
install_carried || exit 1
if [ $dry_run = 1 ]; then
    export PYTHONPATH=$PWD  # here the project's own environment runs it; $SITE was only installed into
else
    export PYTHONPATH=$SITE:$PWD
fi

{
    date
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 || true
    versions
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

status=0
for stage in "${stages[@]}"; do
    echo "=== $stage"
    case $stage in
    compare)
        # shellcheck disable=SC2086  # BENCH_ARGS: several words on purpose
        timeout $((COMPARE_BUDGET + 90)) "$PYTHON" llm/fine_tuning/benchmark_training.py --shape "$SHAPE" \
            --epochs "$COMPARE_EPOCHS" "${dataset_args[@]}" --compare --time-budget "$COMPARE_BUDGET" \
            --output "$OUT/compare.csv" --summary "$OUT/compare.json" $BENCH_ARGS 2>&1 | clean > "$OUT/compare.txt"
        code=${PIPESTATUS[0]}
        tail -n 25 "$OUT/compare.txt"
        [ -f "$OUT/compare.json" ] && cp "$OUT/compare.json" "$KEEP/compare.json"
        [ $code = 0 ] || { echo "compare: exit code $code"; status=1; }
        ;;
    suite)
        "$PYTHON" -c "import kiwipiepy_model" 2>/dev/null \
            || echo "NOTICE: kiwipiepy_model is not installed: the chat-memory tests that need Kiwi will fail"
        # shellcheck disable=SC2086
        timeout "$SUITE_TIMEOUT" "$PYTHON" -m pytest -q -p no:cacheprovider -rfEs $SUITE_ARGS 2>&1 | clean > "$OUT/pytest.txt"
        code=${PIPESTATUS[0]}
        tail -n 30 "$OUT/pytest.txt"
        [ $code = 0 ] || { echo "suite: exit code $code (124: stopped at SUITE_TIMEOUT=$SUITE_TIMEOUT s)"; status=1; }
        ;;
    full)
        flags=${FLAGS:-}
        if [ -z "$flags" ] && [ -f "$KEEP/compare.json" ]; then
            flags=$("$PYTHON" -c "import json, sys; print(' '.join(json.load(open(sys.argv[1]))['fastest_flags']))" \
                    "$KEEP/compare.json")
        fi
        echo "flags: ${flags:-(none: the plain recipe)}"
        # shellcheck disable=SC2086  # flags: several words on purpose
        timeout $((FULL_BUDGET + 90)) "$PYTHON" llm/fine_tuning/benchmark_training.py --shape "$SHAPE" \
            --epochs "$FULL_EPOCHS" "${dataset_args[@]}" --max-seconds "$FULL_BUDGET" --output "$OUT/full.csv" \
            --summary "$OUT/full.json" $flags 2>&1 | clean > "$OUT/full.txt"
        code=${PIPESTATUS[0]}
        tail -n 8 "$OUT/full.txt"
        [ $code = 0 ] || { echo "full: exit code $code"; status=1; }
        ;;
    esac
done
echo "results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit $status
