#!/usr/bin/env bash
# Installs what the tests need (idempotent) and runs the whole suite: lint, types, tests.
# The end-to-end tests start the real vLLM engine with the real Gemma 3 270M (built on first run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev
bash scripts/install-tools.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
echo "== ruff"; .venv/bin/ruff check .
echo "== ruff format"; .venv/bin/ruff format --check .
echo "== mypy (strict on server/, engine/, ragdock/, retrieval/, adapters/)"; .venv/bin/mypy server engine ragdock retrieval adapters
echo "== pytest"; .venv/bin/python -m pytest "$@"
