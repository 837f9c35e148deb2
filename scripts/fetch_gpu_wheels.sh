#!/usr/bin/env bash
# For a GPU machine that reaches no package index: download, on a machine that does, the Python packages it
# lacks, for scripts/gpu_check.sh and scripts/unsloth_gpu_check.sh to install there from the checkout.
#
# Usage: bash scripts/fetch_gpu_wheels.sh [base] [kiwi] [unsloth]      (no argument: all three)
#
# The defaults fit a machine with Python 3.12, torch 2.11, transformers 5.17, accelerate, peft and triton
# installed and nothing else: trl <= 1.15 is the newest that supports transformers 5.17 (and what Unsloth
# 2026.10.9 allows), datasets < 5 what trl 1.15 and Unsloth allow; edit the pins below for another machine.
# Where a copy of the checkout can carry only so much at a time (LIMIT_MIB), the wheels go into folders of that
# size each, a wheel over it cut in two with its checksum:
#   .whl/           trl, datasets, their missing dependencies, peft (the project's pin), liger-kernel
#   .whl-kiwi-1/    the first half of the kiwipiepy_model wheel (its model: an 88 MB download)
#   .whl-kiwi-2/    the second half, and kiwipiepy          (the suite's chat-memory tests need them)
#   .whl-unsloth/   unsloth, unsloth_zoo
#   .whl-bnb/       bitsandbytes (QLoRA; Unsloth runs 16-bit without it, but then runs ldconfig as root)
# The folders are git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
LIMIT_MIB=${LIMIT_MIB:-60}  # per folder: what one copy of the checkout may carry, with room for the tree
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

# Exact versions: one version of each, as the install there needs (two would stop it).
BASE=(trl==1.15.0 datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.2.0 peft==0.21.2
      liger-kernel==0.8.5)
KIWI=kiwipiepy==0.24.1
KIWI_MODEL=kiwipiepy_model==0.24.0
UNSLOTH=(unsloth==2026.10.9 unsloth_zoo==2026.10.9)
BNB=bitsandbytes==0.50.2

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
for folder in /.whl/ /.whl-kiwi-1/ /.whl-kiwi-2/ /.whl-unsloth/ /.whl-bnb/; do
    grep -qxF "$folder" "$exclude" 2>/dev/null || echo "$folder" >> "$exclude"
done

download() {  # folder, requirements...: wheels for the GPU machine's Python, no dependencies
    local folder=$1; shift
    "$PYTHON" -m pip download --quiet --no-deps "${PLATFORM[@]}" -d "$folder" "$@"
}

mib() { du -cm "$@" | tail -1 | cut -f1; }

check_size() {  # folder...: what one call carries
    local size; size=$(mib "$@")
    printf '%-28s %4s MiB\n' "$*" "$size"
    if [ "$size" -gt "$LIMIT_MIB" ]; then
        echo "error: $* is over $LIMIT_MIB MiB: more than one device call can carry" >&2
        exit 1
    fi
}

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(base kiwi unsloth)
for stage in "${stages[@]}"; do
    case $stage in
    base)
        rm -rf .whl && download .whl "${BASE[@]}"
        check_size .whl
        ;;
    kiwi)
        rm -rf .whl-kiwi-1 .whl-kiwi-2 .whl-kiwi-build && mkdir -p .whl-kiwi-1 .whl-kiwi-2 .whl-kiwi-build
        download .whl-kiwi-2 "$KIWI"
        # kiwipiepy_model is only published as a source archive (pure data): built into a wheel here, cut in two.
        "$PYTHON" -m pip download --quiet --no-deps --no-binary=:all: -d .whl-kiwi-build "$KIWI_MODEL"
        "$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation -w .whl-kiwi-build .whl-kiwi-build/*.tar.gz
        wheel=$(ls .whl-kiwi-build/*.whl)
        name=$(basename "$wheel")
        half=$(( ($(stat -c %s "$wheel") + 1) / 2 ))
        split -b "$half" -a 2 "$wheel" ".whl-kiwi-build/$name.part-"
        mv ".whl-kiwi-build/$name.part-aa" .whl-kiwi-1/
        mv ".whl-kiwi-build/$name.part-ab" .whl-kiwi-2/
        # The checksum travels with each half: gpu_check.sh joins the halves once both have arrived.
        (cd .whl-kiwi-build && sha256sum "$name") | tee ".whl-kiwi-1/$name.sha256" > ".whl-kiwi-2/$name.sha256"
        rm -rf .whl-kiwi-build
        check_size .whl-kiwi-1
        check_size .whl-kiwi-2
        ;;
    unsloth)
        rm -rf .whl-unsloth .whl-bnb
        download .whl-unsloth "${UNSLOTH[@]}"
        download .whl-bnb "$BNB"
        check_size .whl .whl-unsloth
        check_size .whl-bnb
        ;;
    *)
        echo "error: unknown part $stage (base, kiwi or unsloth)" >&2
        exit 2
        ;;
    esac
done
echo "wheels:"
ls -l .whl* 2>/dev/null | awk '/^-/ {printf "  %9.1f MiB  %s\n", $5 / 1048576, $9} /^\./ {print}'
