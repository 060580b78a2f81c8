#!/usr/bin/env bash
# The grounded-answering adapter, start to finish, as it was made for the demo:
#   1. build RAFT data from SQuAD 2.0 (split by article; frozen holdout),
#   2. train the LoRA (training/configs/grounded-raft-270m.yaml; ~40 min on 2 idle cores; the
#      multi-turn + replay variant, measured and not kept, is grounded-raft-270m-multiturn.yaml),
#   3. start a gateway, push the adapter, calibrate when it answers on the validation articles
#      (`ragdock eval calibrate`: the threshold goes into its manifest), push it again,
#   4. run the eval suite against the base with the default gate,
#   5. copy the adapter, its manifest, model card, calibration curve and gated eval report to
#      adapters/demo/grounded/, which `ragdock up` pushes and promotes on start;
#   6. train the grounding reader (training/configs/reader-minilm.yaml; hours on 2 CPU cores,
#      resumable: run this script again), fit its answer/abstain decision on the calibration
#      article (`ragdock eval calibrate-reader`) and copy it to adapters/demo/reader/, which the
#      gateway loads with RAGDOCK_READER=auto. RAGDOCK_READER_RUN sets where it trains.
# Steps already done are skipped (delete runs/raft-squad2 or runs/grounded-raft-270m to redo them).
#
#   scripts/flagship.sh [SQUAD_JSON]
set -euo pipefail
cd "$(dirname "$0")/.."

squad=${1:-../shared/data/squad2-public/squad2-dev-public.json}
port=${RAGDOCK_FLAGSHIP_PORT:-8300}  # 8100 is the engine's
work=${RAGDOCK_FLAGSHIP_WORK:-runs/flagship}
ragdock=.venv/bin/ragdock

if [[ ! -f runs/raft-squad2/holdout.jsonl ]]; then
  $ragdock train build-raft "$squad" --out runs/raft-squad2 --distractors 3 \
    --p-remove-oracle 0.15 --p-keep-unanswerable 0.5 --max-train 480 --max-validation 48 \
    --max-tokens 1024 --seed 0
fi
if [[ ! -f runs/grounded-raft-270m/manifest.json ]]; then
  $ragdock train training/configs/grounded-raft-270m.yaml
fi
reader_run=${RAGDOCK_READER_RUN:-runs/reader-minilm}
if [[ ! -f $reader_run/manifest.json ]]; then
  $ragdock train training/configs/reader-minilm.yaml output_dir="$reader_run"
fi
if ! grep -q '"decision": {' "$reader_run/manifest.json"; then
  # Fitted on the gateway's own retrieval over three held-out articles; the 0.05 target leaves
  # room for the shift to unseen articles (0.10 there let 0.175 through on the holdout).
  $ragdock eval calibrate-reader "$reader_run" --target-hallucination 0.05 --top-k 5 \
    --split calibration,validation
fi
reader_demo=adapters/demo/reader
rm -rf "$reader_demo" && mkdir -p "$reader_demo"
cp "$reader_run"/{manifest.json,reader_weights.safetensors,README.md,eval_summary.json,training_curve.png} "$reader_demo/"

# A gateway of its own (own registry and store under $work), stopped on exit.
mkdir -p "$work"
RAGDOCK_DATA_DIR="$work/data" RAGDOCK_ADAPTERS_DIR="$work/adapters" \
  $ragdock up --port "$port" >"$work/gateway.log" 2>&1 &
gateway_pid=$!
trap 'kill -INT $gateway_pid 2>/dev/null; wait $gateway_pid 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
  kill -0 $gateway_pid 2>/dev/null || { tail -30 "$work/gateway.log"; exit 1; }
  sleep 1
done

export RAGDOCK_GATEWAY_URL="http://127.0.0.1:$port"
# `ragdock eval` signs its report with this gateway's key (created on its first start), so the
# gateway judges the attached report with its own gate.
export RAGDOCK_SIGNING_KEY_FILE="$work/data/signing.key"
# Every question of the validation article through the RAG path: fit the answer-or-abstain score
# and its threshold for a target hallucination rate, into the manifest (enforced only if it keeps
# false abstention within the gate's 0.33 on validation); then push that version.
if ! grep -q '"calibration"' runs/grounded-raft-270m/manifest.json; then
  $ragdock adapters push runs/grounded-raft-270m --name grounded --gateway "$RAGDOCK_GATEWAY_URL"
  $ragdock eval calibrate runs/grounded-raft-270m --candidate grounded@latest --corpus "$squad" \
    --raft runs/raft-squad2 --target-hallucination 0.08 --top-k 4
fi
$ragdock adapters push runs/grounded-raft-270m --name grounded --gateway "$RAGDOCK_GATEWAY_URL"
status=0
$ragdock eval eval/suites/grounded-raft-270m.yaml --candidate grounded@latest \
  --gate eval/suites/grounded-raft-270m.gate.yaml --attach --out runs/eval/grounded-raft-270m \
  || status=$?
if [[ $status -gt 1 ]]; then exit $status; fi   # 1 = the gate failed: still worth shipping the report
# A crash also exits 1: ship only a report that was written by this run.
report=runs/eval/grounded-raft-270m/report.json
[[ -f $report && $report -nt runs/grounded-raft-270m/manifest.json ]] || { echo "no new report"; exit 1; }

demo=adapters/demo/grounded
rm -rf "$demo" && mkdir -p "$demo"
cp runs/grounded-raft-270m/{adapter_config.json,adapter_model.safetensors,manifest.json,README.md} "$demo/"
cp runs/grounded-raft-270m/calibration.png "$demo/"
cp runs/eval/grounded-raft-270m/answerability.png "$demo/"
# The shipped report keeps every figure and verdict but only the ids of failed examples: the
# SQuAD text stays in the shared data (runs/eval/ has the full report and every output).
.venv/bin/python - "$demo" <<'PY'
import json, sys
from pathlib import Path
from eval.report import render_markdown
demo = Path(sys.argv[1])
report = json.loads(Path("runs/eval/grounded-raft-270m/report.json").read_text())
for task in report["tasks"].values():
    task["failures"] = [{"id": f["id"], "verdict": f.get("verdict", ""), "output": "",
                         "question": "", "answers": ""} for f in task.get("failures", [])]
# Trimmed, it is no longer what the flagship's gateway signed (and no other platform holds that
# key): shipped unsigned, as evidence that `ragdock up` registers and does not promote.
report.pop("signature", None)
(demo / "eval_report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
(demo / "eval_report.md").write_text(render_markdown(report))
PY
echo "shipped to $demo (gate exit status $status)"
