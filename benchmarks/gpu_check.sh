#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py says what it asserts): about five minutes on one NVIDIA GPU.
#
#   benchmarks/gpu_check.sh OUT [--wheels DIR] [gpu_check.py options, e.g. --device cpu for a dry run]
#   benchmarks/gpu_check.sh --download-wheels DIR [pip options for another machine, e.g.
#       --python-version 3.12 --only-binary=:all: --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64]
#
# Needs: a python with torch (a CUDA build) and torchvision already installed: python (or python3) on the PATH,
# or $PYTHON. Nothing else of the machine is changed: the project is copied to OUT/src and installed,
# with the rest of its dependencies, into OUT/venv, which also sees that python's packages (so torch
# is not installed again). Those dependencies come from the package index, or, on a machine without
# network, from --wheels DIR: the folder that --download-wheels DIR fills on a machine with network
# and the same Python version, or pip's options for the GPU machine's (every dependency but torch,
# torchvision and what they require).
# Everything it writes (the venv, runs, caches, the report OUT/gpu_check.json) stays under OUT.
set -euo pipefail
if [[ $# -lt 1 || ($1 == -* && $1 != --download-wheels) ]]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
python=${PYTHON:-$(command -v python || command -v python3 || echo python)}
repo=$(cd "$(dirname "$0")/.." && pwd)

if [[ $1 == --download-wheels ]]; then
  [[ -n ${2:-} ]] || { echo "gpu_check: --download-wheels needs the folder to fill" >&2; exit 2; }
  dir=$2
  shift 2
  pip_options=("$@") target=() version=()
  # pip resolves for another platform or Python only into a --target (never written: a dry run).
  [[ $# -gt 0 ]] && target=(--target "$(mktemp -u)")
  while [[ $# -gt 0 ]]; do
    [[ $1 == --python-version ]] && version=("$2")
    shift
  done
  mkdir -p "$dir"
  report=$(mktemp)
  trap 'rm -f "$report" "$report.txt"' EXIT
  "$python" -m pip install --quiet --dry-run --ignore-installed "${target[@]}" "${pip_options[@]}" --report "$report" \
    "$repo" pytest pyyaml
  (cd "$repo" && "$python" -m benchmarks.gpu_wheels "$report" "${version[@]}") > "$report.txt"
  "$python" -m pip download --quiet --no-deps "${pip_options[@]}" -d "$dir" -r "$report.txt"
  echo "gpu_check: $(wc -l < "$report.txt") wheels in $dir ($(du -sh "$dir" | cut -f1)); on the GPU machine: benchmarks/gpu_check.sh OUT --wheels $dir"
  exit 0
fi

out=$(mkdir -p "$1" && cd "$1" && pwd)
shift
wheels=()
if [[ ${1:-} == --wheels ]]; then
  [[ -d ${2:-} ]] || { echo "gpu_check: --wheels needs a folder of wheels" >&2; exit 2; }
  wheels=(--no-index --find-links "$(cd "$2" && pwd)")
  shift 2
fi
"$python" -c "import torch, torchvision" 2>/dev/null || {
  echo "gpu_check: $python has no torch and torchvision: install a CUDA build of both first (or set PYTHON)" >&2
  exit 2
}

export TMPDIR="$out/tmp" PIP_CACHE_DIR="$out/cache/pip" XDG_CACHE_HOME="$out/cache" TORCH_HOME="$out/cache/torch" \
  MPLCONFIGDIR="$out/cache/matplotlib" CUDA_CACHE_PATH="$out/cache/nv" PYTHONPYCACHEPREFIX="$out/cache/pycache" \
  PYTHONWARNINGS=ignore
mkdir -p "$TMPDIR"

# The project as committed or edited here, without the run folders, data or environments of this checkout.
src="$out/src"
rm -rf "$src"
mkdir -p "$src"
(cd "$repo" && tar cf - --exclude=./.git --exclude='./.venv*' --exclude=./lightning_logs --exclude=./data \
  --exclude='*.egg-info' --exclude=./build .) | (cd "$src" && tar xf -)

if [[ ! -x $out/venv/bin/python ]]; then
  "$python" -m venv "$out/venv"
  # The new environment sees the given python's packages (torch among them), whether that python is
  # a system one, a conda environment or a virtual environment.
  "$python" -c "import site, sys; print('\n'.join(site.getsitepackages() + [site.getusersitepackages()]))" \
    > "$("$out/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/_base_packages.pth"
fi
"$out/venv/bin/python" -m pip install --quiet "${wheels[@]}" "$src" pytest pyyaml

cd "$src"
"$out/venv/bin/python" -m benchmarks.gpu_check --out "$out" "$@"
