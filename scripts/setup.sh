#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with the CPU build of torch and the project.
#   bash scripts/setup.sh          the project (training, pipeline, scorer)
#   bash scripts/setup.sh dev      also the Space, the test tools and a headless Chromium for browser tests
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU build: a plain `torch` requirement would pull several GB of CUDA packages.
python -c "import torch" 2>/dev/null || python -m pip install -q torch==2.13.0
if [ "${1:-}" = dev ]; then
    python -m pip install -q -e ".[dev]"
    if ! command -v chromium >/dev/null; then
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
        else
            echo "warning: the browser test needs Debian's chromium: sudo apt-get install chromium" >&2
        fi
    fi
else
    python -m pip install -q -e .
fi
