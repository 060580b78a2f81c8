#!/usr/bin/env bash
# Command-line tools the tests use to validate operator artefacts, installed into .venv/tools:
#   promtool  (Debian's prometheus package): `promtool check metrics` on the gateway's metrics
# Idempotent: a tool already there is not fetched again. The .deb is unpacked, not installed, so no
# Prometheus service is started on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=.venv/tools
mkdir -p "$tools"

if [[ ! -x "$tools/promtool" ]]; then
  echo "ragdock: fetching promtool (Debian package prometheus)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
    apt-get update -qq >/dev/null
    (cd "$work" && apt-get download prometheus >/dev/null 2>&1)
  fi
  dpkg -x "$work"/prometheus_*.deb "$work/x"
  cp "$work/x/usr/bin/promtool" "$tools/promtool"
fi
echo "ragdock: tools ready ($("$tools/promtool" --version 2>&1 | head -1))"
