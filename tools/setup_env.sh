#!/usr/bin/env bash
# Create or complete the project-local environment in .venv/ (idempotent).
#
# A second run with everything in place only checks imports and takes seconds.
# Environment knobs:
#   PYTHON             interpreter for a new venv            (default: python3.11, else python3)
#   TORCH_VERSION      torch installed when none is present  (default: 2.13.0, the CPU wheel on disk)
#   MMSEG_ERF_WHEELS   where the compiled mmcv wheel is kept (default: ~/.cache/mmseg-erf/wheels)
#   MMSEG_ERF_VENV     where the environment lives           (default: <repo>/.venv)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${MMSEG_ERF_VENV:-$repo/.venv}
torch_version=${TORCH_VERSION:-2.13.0}
wheel_root=${MMSEG_ERF_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/mmseg-erf/wheels}
MMCV_VERSION=2.1.0
MMENGINE_SPEC='mmengine>=0.10.0,<0.11'
MMSEG_SPEC='mmsegmentation==1.2.2'

# elapsed seconds in every line, so a slow first run shows where its time went
say() { printf '[setup_env %4ss] %s\n' "$SECONDS" "$*" >&2; }

# ---- 1. the virtual environment ------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
    python_bin=${PYTHON:-$(command -v python3.11 || command -v python3)}
    say "creating $venv with $python_bin"
    "$python_bin" -m venv "$venv"
fi
py="$venv/bin/python"
# This machine's pip config names extra indexes that may not exist; pip warns once per
# package about them. Keep the log readable, keep pip's exit status.
# (pipefail is on: the pipeline fails when pip fails, whatever grep does)
quiet_pip() {
    "$py" -m pip --disable-pip-version-check "$@" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
pip_install() { quiet_pip install -q "$@"; }

# ---- fast path: everything importable and this package installed from this repo --
ready_check='
import os, mmcv, mmcv.ops, mmengine, mmseg, torch, mmseg_erf, mmdet.models, wandb
assert mmcv.__version__ == "'"$MMCV_VERSION"'", mmcv.__version__
assert os.path.dirname(os.path.dirname(mmseg_erf.__file__)) == "'"$repo"'", mmseg_erf.__file__
'
stamp="$venv/.mmseg_erf_setup"
fingerprint=$(cat "$repo/setup.py" "$repo/tools/setup_env.sh" | cksum)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ] && "$py" -c "$ready_check" 2>/dev/null; then
    say "environment ready ($venv)"
    exit 0
fi

# ---- 2. torch: keep whatever torch is there (a CUDA build stays) -----------------
if ! "$py" -c 'import torch' 2>/dev/null; then
    say "installing torch==$torch_version (CPU build unless your index says otherwise)"
    pip_install "torch==$torch_version"
fi
torch_tag=$("$py" -c 'import sys, torch; print(f"torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}")')
say "using $torch_tag"

# mmcv's setup.py and mmengine's `mmseg::` config paths both import pkg_resources
pip_install 'setuptools<70'

# ---- 3. mmcv with compiled ops, built once per torch build and cached -----------
if ! "$py" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
    cache="$wheel_root/$torch_tag"
    wheel=$(ls "$cache"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1 || true)
    if [ -z "$wheel" ]; then
        say "building mmcv $MMCV_VERSION with ops from source (once; about 8 minutes on 2 cores)"
        # mmcv's setup.py imports pkg_resources (setuptools<70) and torch (no build isolation).
        pip_install wheel ninja
        build_dir=$(mktemp -d)
        trap 'rm -rf "$build_dir"' EXIT
        # Python's own CFLAGS carry -g; debug info roughly doubles the compile time of
        # mmcv's C++ ops and is never used, so -g0 (appended last, it wins) drops it.
        CFLAGS="${CFLAGS:-} -g0" MMCV_WITH_OPS=1 FORCE_CUDA=${FORCE_CUDA:-0} \
            MAX_JOBS=${MAX_JOBS:-$(nproc)} quiet_pip wheel --no-build-isolation --no-deps -w "$build_dir" "mmcv==$MMCV_VERSION"
        mkdir -p "$cache"
        built=$(ls "$build_dir"/mmcv-*.whl)
        # copy then rename, so an interrupted build never leaves a half wheel in the cache
        cp "$built" "$cache/.partial.whl" && mv "$cache/.partial.whl" "$cache/$(basename "$built")"
        wheel="$cache/$(basename "$built")"
    else
        say "reusing cached $wheel"
    fi
    pip_install "$wheel"
fi

# ---- 4. mmengine, mmsegmentation and this package (editable) --------------------
pip_install "$MMENGINE_SPEC" "$MMSEG_SPEC"
# extras: mmdet (MaskFormer/Mask2Former configs) and wandb (WandbVisBackend); not
# mmpretrain, whose torchvision must match the torch build (README: optional packages)
pip_install -e "$repo[tests,mmdet,wandb]"
"$py" -c "$ready_check"
echo "$fingerprint" > "$stamp"
say "environment ready ($venv)"
