#!/usr/bin/env bash
# Installs what the tests need (idempotent) and runs the whole suite: lint, types, tests.
# The end-to-end tests start the real vLLM engine with the real Gemma 3 270M (built on first run).
# Each phase prints its wall time, and a table of all of them closes the run (also on failure),
# so a slow phase stands out in CI's log; pytest adds its own table per test directory.
set -euo pipefail
cd "$(dirname "$0")/.."

phases=()
phase() {  # phase NAME COMMAND...: run COMMAND, record NAME's wall time
  local name=$1 started=$SECONDS
  shift
  echo "== $name"
  local status=0
  "$@" || status=$?
  phases+=("$(printf '%-34s %5d s%s' "$name" $((SECONDS - started)) "$([[ $status == 0 ]] || echo "  (failed: exit $status)")")")
  return "$status"
}
summary() {
  echo "== wall time per phase (CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
  for line in "${phases[@]}"; do echo "  $line"; done
  echo "  $(printf '%-34s %5d s' total "$SECONDS")"
}
trap summary EXIT

phase "install (scripts/install.sh --dev)" bash scripts/install.sh --dev
phase "tools (scripts/install-tools.sh)" bash scripts/install-tools.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
phase "model build (or verify)" .venv/bin/ragdock model build
phase "compute dtype (auto)" .venv/bin/ragdock engine dtype
phase "ruff" .venv/bin/ruff check .
phase "ruff format" .venv/bin/ruff format --check .
phase "mypy (strict)" \
  .venv/bin/mypy server engine ragdock ragdock_cli retrieval grounding adapters training eval
phase "pytest" .venv/bin/python -m pytest "$@"
