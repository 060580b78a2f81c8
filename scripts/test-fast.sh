#!/usr/bin/env bash
# The fast tier: every test that needs no vLLM engine, no model weights, no PostgreSQL server, no
# embedder weights and no validator binary (pytest -m fast; tests/conftest.py marks the tiers).
# Nothing is installed, built or probed first: run it while you work, in an environment that
# `scripts/install.sh --dev` made; run `bash scripts/test.sh` (the full suite) before you stop.
# Extra pytest arguments pass through: `bash scripts/test-fast.sh tests/unit -q`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -x .venv/bin/python ]]; then
  echo "ragdock: no .venv here; run scripts/install.sh --dev first" >&2
  exit 2
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Files wholly of the full tier (tests/e2e, tests/console, ...) are not even imported (conftest).
# The pytest plugins of langsmith, schemathesis and hypothesis cost ~6 s of start-up and no fast
# test needs them (hypothesis itself works without its plugin).
exec .venv/bin/python -m pytest -m fast -p no:langsmith_plugin -p no:schemathesis \
  -p no:hypothesispytest "$@"
