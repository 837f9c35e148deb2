# Sourced by scripts/gpu_check.sh and scripts/unsloth_gpu_check.sh, on a GPU machine without a package index:
# install the wheels this copy of the checkout carries (the .whl* folders scripts/fetch_gpu_wheels.sh fills)
# into $SITE. They are collected in $CARRIED first, which outlives a run, so a wheel cut in two is joined once
# its second half has come with a later copy.
# Needs PYTHON, SITE, CARRIED; install_tags (an array, may be empty) adds pip's target tags.

# The GPU machine's Python, for installing its wheels on another (the scripts' --cpu-dry-run): install_tags.
GPU_MACHINE_TAGS=(--python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux_2_28_x86_64
                  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

install_carried() {
    local folder sum name wheels
    mkdir -p "$SITE" "$CARRIED/installed"
    for folder in .whl .whl-kiwi-1 .whl-kiwi-2 .whl-unsloth .whl-bnb; do
        [ -d "$folder" ] && cp -n "$folder"/* "$CARRIED"/ 2>/dev/null
    done
    for sum in "$CARRIED"/*.whl.sha256; do  # join the halves of a cut wheel once the checksum says all are here
        [ -e "$sum" ] || continue
        name=$(basename "$sum" .sha256)
        { [ -e "$CARRIED/installed/$name" ] || [ -e "$CARRIED/$name" ]; } && continue
        cat "$CARRIED/$name".part-* > "$CARRIED/$name.joining" 2>/dev/null
        if (cd "$CARRIED" && mv "$name.joining" "$name" && sha256sum --check --status "$name.sha256"); then
            rm -f "$CARRIED/$name".part-*
            echo "joined $name"
        else
            rm -f "$CARRIED/$name"
            echo "NOTICE: $name: only part of it is here yet; carry its other half in the next call (within 30 s)"
        fi
    done
    wheels=("$CARRIED"/*.whl)
    [ -e "${wheels[0]}" ] || return 0
    echo "installing ${#wheels[@]} carried wheel(s) into $SITE"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "${install_tags[@]}" "${wheels[@]}" || { echo "error: the carried wheels did not install" >&2; return 1; }
    mv "${wheels[@]}" "$CARRIED/installed/"
}

# Nothing outside the machine can be reached: no library may try, and no progress bars in the result files.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

clean() {  # progress bars (carriage returns, `12%|###  |` lines) left out of the result files
    sed -u 's/\r/\n/g' | grep --line-buffered -v -E '[0-9]+%\||^[[:space:]]*$'
}

versions() {  # the libraries that matter, as this Python sees them (with $SITE on the path)
    "$PYTHON" - <<'PYTHON'
import importlib.metadata as metadata, platform, sys
names = ["torch", "transformers", "trl", "datasets", "peft", "accelerate", "tokenizers", "triton", "liger-kernel",
         "kiwipiepy", "kiwipiepy_model", "flash-attn", "unsloth", "unsloth_zoo", "bitsandbytes"]
def installed(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"
print(f"python {platform.python_version()} ({sys.executable}); " + ", ".join(f"{n} {installed(n)}" for n in names))
import torch
print(f"cuda: {torch.cuda.is_available()}" + (f", {torch.cuda.get_device_name(0)}, capability "
      f"{torch.cuda.get_device_capability(0)}, bf16 {torch.cuda.is_bf16_supported()}" if torch.cuda.is_available() else ""))
PYTHON
}
