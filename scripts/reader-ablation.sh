#!/usr/bin/env bash
# The reader's ablation through the gateway, on the RAFT holdout's articles (never trained on):
# one engine, two gateways (`ragdock up`): one with the reader, one without; the same 200 seeded
# questions asked under each setting (eval/reader_ablation.py), with 95% bootstrap intervals.
#
#   scripts/reader-ablation.sh [READER_DIR] [OUT_DIR]
#
# RAGDOCK_ABLATION_ONLY=without (or with) measures one gateway only, with its own engine: the
# reader-less row does not depend on the reader, so it can be measured while one trains.
#
# Needs the RAFT data (`ragdock train build-raft`, see scripts/flagship.sh) and a reader
# (default: the shipped adapters/demo/reader). The adapter asked is the shipped grounded@v1.
set -euo pipefail
cd "$(dirname "$0")/.."

reader=${1:-adapters/demo/reader}
out=${2:-runs/reader-ablation}
squad=../shared/data/squad2-public/squad2-dev-public.json
engine_port=${RAGDOCK_ABLATION_ENGINE_PORT:-8610}
with_port=${RAGDOCK_ABLATION_PORT:-8620}
without_port=$((with_port + 1))
ragdock=.venv/bin/ragdock
mkdir -p "$out"
pids=()
trap 'for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

wait_ready() {  # wait_ready PORT PID LOG
  for _ in $(seq 900); do
    curl -fs "http://127.0.0.1:$1/readyz" >/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { tail -30 "$3"; exit 1; }
    sleep 1
  done
  echo "the gateway on port $1 did not become ready"; exit 1
}

only=${RAGDOCK_ABLATION_ONLY:-}
common=(--model "${RAGDOCK_ABLATION_MODEL:-grounded@v1}" --holdout runs/raft-squad2/holdout.jsonl --corpus "$squad"
        --max-questions "${RAGDOCK_ABLATION_QUESTIONS:-200}" --top-k "${RAGDOCK_ABLATION_TOP_K:-5}" --max-tokens 48)

if [[ $only != without ]]; then
  RAGDOCK_READER=$reader RAGDOCK_ENGINE_PORT=$engine_port RAGDOCK_DATA_DIR="$out/with/data" \
    RAGDOCK_ADAPTERS_DIR="$out/with/adapters" RAGDOCK_DEMO_DOCUMENTS=false \
    $ragdock up --port "$with_port" >"$out/with.log" 2>&1 &
  pids+=($!)
  wait_ready "$with_port" "${pids[-1]}" "$out/with.log"
  engine=(--engine-url "http://127.0.0.1:$engine_port")
else
  engine=()
fi
if [[ $only != with ]]; then
  RAGDOCK_READER=none RAGDOCK_ENGINE_PORT=$engine_port RAGDOCK_DATA_DIR="$out/without/data" \
    RAGDOCK_ADAPTERS_DIR="$out/without/adapters" RAGDOCK_DEMO_DOCUMENTS=false \
    $ragdock up "${engine[@]}" --port "$without_port" >"$out/without.log" 2>&1 &
  pids+=($!)
  wait_ready "$without_port" "${pids[-1]}" "$out/without.log"
  HF_HUB_OFFLINE=1 .venv/bin/python -m eval.reader_ablation --gateway "http://127.0.0.1:$without_port" \
    "${common[@]}" --json "$out/without.json" | tee "$out/without.md"
fi
if [[ $only != without ]]; then
  HF_HUB_OFFLINE=1 .venv/bin/python -m eval.reader_ablation --gateway "http://127.0.0.1:$with_port" \
    "${common[@]}" \
    --setting 'generate, no support check={"answer_mode": "generate", "min_support": 0.0}' \
    --setting 'generate={"answer_mode": "generate"}' \
    --setting 'extract={"answer_mode": "extract"}' \
    --json "$out/with.json" | tee "$out/with.md"
fi
