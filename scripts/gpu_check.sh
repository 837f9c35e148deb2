#!/usr/bin/env bash
# The GPU measurements, in stages, each bounded in time (a rented machine may be held for minutes only):
#
#   bash scripts/gpu_check.sh compare   the training benchmark at Polyglot-Ko 1.3B's full shape: the plain recipe
#                                       and each speed option for 3 epochs (--compare), within COMPARE_BUDGET s
#   bash scripts/gpu_check.sh full      the fastest combination `compare` found (FLAGS= overrides it), for the
#                                       recipe's 60 epochs end to end, stopped at FULL_BUDGET s (the rest projected)
#   bash scripts/gpu_check.sh memory    peak memory and epoch time of LoRA bf16 and QLoRA 4-bit for both models
#                                       (2 epochs each, MEMORY_BUDGET s each), for docs/gpu.md's card table
#   bash scripts/gpu_check.sh suite     python -m pytest -q (the whole suite), within SUITE_TIMEOUT s
#   bash scripts/gpu_check.sh --cpu-dry-run [stages]   the same logic on a CPU: the tiny shapes, 1-2 epochs
#
# Results go to $OUT (default: gpu_results/, git-ignored): env.txt, compare.{txt,csv,json}, full.{txt,csv,json},
# memory.{txt,csv}, pytest.txt. On a machine without a package index, what it lacks comes as wheels
# (scripts/fetch_gpu_wheels.sh, on a machine with one) in the .whl* folders of the checkout; they are collected
# in $CARRIED, which outlives a run, so that a wheel cut in two is joined once its second half has come.
# A plan for two runs of under 10 minutes each (budgets from an H200's timings, docs/gpu.md):
#   run 1, carrying .whl and .whl-bnb:   bash scripts/gpu_check.sh compare full
#   run 2, carrying .whl-unsloth:        bash scripts/gpu_check.sh memory; RUN_TESTS=0 bash scripts/unsloth_gpu_check.sh;
#                                        bash scripts/gpu_check.sh suite
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/carried_wheels.sh
. scripts/carried_wheels.sh

dry_run=0
stages=()
for argument in "$@"; do
    case $argument in
    --cpu-dry-run) dry_run=1 ;;
    compare|full|memory|suite) stages+=("$argument") ;;
    *) echo "usage: bash scripts/gpu_check.sh [--cpu-dry-run] [compare] [full] [memory] [suite]" >&2; exit 2 ;;
    esac
done
[ ${#stages[@]} -eq 0 ] && stages=(compare full memory suite)

if [ $dry_run = 1 ]; then
    PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
    SHAPE=${SHAPE:-tiny}
    COMPARE_EPOCHS=${COMPARE_EPOCHS:-1}
    FULL_EPOCHS=${FULL_EPOCHS:-2}
    COMPARE_BUDGET=${COMPARE_BUDGET:-120}
    FULL_BUDGET=${FULL_BUDGET:-120}
    MEMORY_SHAPES=${MEMORY_SHAPES:-tiny tiny-gemma}
    MEMORY_EPOCHS=${MEMORY_EPOCHS:-1}
    MEMORY_BUDGET=${MEMORY_BUDGET:-120}
    SUITE_TIMEOUT=${SUITE_TIMEOUT:-300}
    SUITE_ARGS=${SUITE_ARGS:-tests/fine_tuning/test_benchmark.py}
    BENCH_ARGS=${BENCH_ARGS:---variants quiet-steps,eval-one-batch,test-one-batch}
    DATASET=${DATASET:-/tmp/gpu_check_dry_run/small.csv}  # 24 train and 6 valid rows of the real one
    SITE=${SITE:-/tmp/gpu_check_dry_run/site}
    CARRIED=${CARRIED:-/tmp/gpu_check_dry_run/carried}
    KEEP=${KEEP:-/tmp/gpu_check_dry_run/keep}
    OUT=${OUT:-$(mktemp -d /tmp/gpu_check_out.XXXXXX)}
    # The wheels are the GPU machine's (Python 3.12): installed as for it, into a folder this run leaves aside.
    install_tags=("${GPU_MACHINE_TAGS[@]}")
else
    PYTHON=${PYTHON:-python3}
    SHAPE=${SHAPE:-polyglot-ko-1.3b}
    COMPARE_EPOCHS=${COMPARE_EPOCHS:-3}
    FULL_EPOCHS=${FULL_EPOCHS:-60}
    COMPARE_BUDGET=${COMPARE_BUDGET:-200}  # the warm-up and 4-5 variants at 3 epochs (an H200: 30-65 s each)
    FULL_BUDGET=${FULL_BUDGET:-240}  # the goal: 60 epochs in under 2 minutes; 4 minutes at most here
    MEMORY_SHAPES=${MEMORY_SHAPES:-polyglot-ko-1.3b gemma-2-2b}
    MEMORY_EPOCHS=${MEMORY_EPOCHS:-2}
    MEMORY_BUDGET=${MEMORY_BUDGET:-60}  # each of the 4 runs
    SUITE_TIMEOUT=${SUITE_TIMEOUT:-180}
    SUITE_ARGS=${SUITE_ARGS:-}
    BENCH_ARGS=${BENCH_ARGS:-}
    DATASET=${DATASET:-}  # empty: the project's dataset
    SITE=${SITE:-/tmp/site}
    CARRIED=${CARRIED:-/tmp/carried}
    KEEP=${KEEP:-/tmp/gpu_check}  # what a later run's stage reads (the compare's summary), wherever $OUT goes
    install_tags=()
    OUT=${OUT:-gpu_results}
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
    memory)
        for shape in $MEMORY_SHAPES; do
            for quantization in none 4bit; do
                echo "--- $shape, quantization $quantization"
                timeout $((MEMORY_BUDGET + 60)) "$PYTHON" llm/fine_tuning/benchmark_training.py --shape "$shape" \
                    --epochs "$MEMORY_EPOCHS" "${dataset_args[@]}" --quantization "$quantization" \
                    --max-seconds "$MEMORY_BUDGET" --output "$OUT/memory.csv" 2>&1 | clean >> "$OUT/memory.txt"
                code=${PIPESTATUS[0]}
                tail -n 2 "$OUT/memory.txt"
                [ $code = 0 ] || { echo "memory $shape $quantization: exit code $code"; status=1; }
            done
        done
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
