#!/usr/bin/env bash
# Set up (see scripts/setup.sh) and run the whole test suite offline, slow tests included.
# The tests that read real brat corpora find them in $RADIOLOGY_NER_CORPORA (default: ../shared/corpora); without
# them those tests are skipped, or fail under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
    GRADIO_ANALYTICS_ENABLED=False TOKENIZERS_PARALLELISM=false
python -m pytest "$@"
