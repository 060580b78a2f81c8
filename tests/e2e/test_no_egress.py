"""No byte leaves: the whole product, run in a network namespace that has only loopback, never
tries to reach another address.

tests/egress_session.py drives it as a user would (`ragdock up`, `ragdock ingest`, a grounded
answer, the console page, `ragdock train`, `ragdock eval`) under strace, which records every
socket call that names a destination, from every process (engine, workers, gateway, CLIs). Each
must be loopback (tests/egress.py judges them); a call that fails because the namespace has no
route still fails the test, since on the user's machine it would have left. The steps' results
are checked too: a session that did nothing would prove nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ragdock.contracts.eval_report import parse_eval_report
from tests.egress import STRACE_ARGS, leaving, parse_strace, tally
from tests.egress_session import REPO, TRAINED, SessionRecord

# e2e: one engine (`ragdock up`'s); tools: strace from scripts/install-tools.sh
pytestmark = [pytest.mark.e2e, pytest.mark.tools]

SESSION_TIMEOUT_S = 1200


def run_in_loopback_namespace(workdir: Path, trace: Path) -> subprocess.CompletedProcess[str]:
    """tests/egress_session.py in a new network namespace (lo brought up, nothing else) under
    strace, writing every destination-naming socket call to `trace`."""
    strace = shutil.which("strace")
    assert strace, "strace is missing: run scripts/install-tools.sh (Debian package strace)"
    assert shutil.which("ip"), "ip is missing: run scripts/install-tools.sh (Debian iproute2)"
    inside = 'ip link set lo up && exec "$@"'
    command = ["unshare", "--net", "--", "sh", "-c", inside, "sh",
               strace, *STRACE_ARGS, "-o", str(trace),
               sys.executable, "-m", "tests.egress_session", str(workdir)]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, timeout=SESSION_TIMEOUT_S
    )


def test_the_whole_product_connects_to_loopback_only(model_dir: Path, tmp_path: Path) -> None:
    trace = tmp_path / "socket-calls.strace"
    done = run_in_loopback_namespace(tmp_path, trace)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    record = SessionRecord.read(tmp_path / "session.json")
    attempts = parse_strace(trace.read_text())
    print(f"socket calls naming a destination: {len(attempts)}: {dict(tally(attempts))}")
    print(f"step wall times (s): {record.seconds}")

    # The promise: nothing outside loopback, from any process, whatever the call's outcome.
    leaks = leaving(attempts)
    assert not leaks, "\n".join(f"{why}: pid {a.pid}: {a.line}" for a, why in leaks)
    # And the trace saw the product's own traffic: the gateway calling the engine, and the CLIs
    # calling the gateway (from processes other than the driver), so it followed every child.
    ports = {(a.host, a.port) for a in attempts if a.pid != record.driver_pid}
    assert ("127.0.0.1", record.engine_port) in ports, sorted(ports, key=str)
    assert ("127.0.0.1", record.gateway_port) in ports, sorted(ports, key=str)

    assert record.error is None, record.error + "\n" + record.up_output
    # `ragdock up` served, and Ctrl-C stopped it and its engine.
    assert record.up_exit == 0 and not record.orphans, (record.orphans, record.up_output)
    # `ragdock ingest`: every demo document stored, in chunks.
    demo_docs = sorted(p.name for p in (REPO / "ragdock" / "demo_docs").glob("*.md"))
    assert record.ingest_exit == 0, record.ingest_output
    assert re.search(rf"{len(demo_docs)} files: {len(demo_docs)} added", record.ingest_output)
    assert sorted(record.documents) == demo_docs and all(record.documents.values())
    # The grounded answer: the gateway's default port, from the sources, citing one.
    assert "8000" in record.answer and "[1]" in record.answer, record.answer
    assert record.grounding["status"] == "answered", record.grounding
    assert record.answer_sources and record.answer_sources[0].startswith("[1] ")
    # The console's page and the files it loads.
    assert set(record.console.values()) == {200}, record.console
    assert '<script type="module" src="js/app.js">' in record.console_html
    # `ragdock train`: two steps, a servable adapter written.
    assert record.train_exit == 0, record.train_output
    assert {"adapter_config.json", "adapter_model.safetensors", "manifest.json"} <= set(
        record.adapter_files
    ), record.adapter_files
    # `ragdock eval`: a report with the candidate's and the base's generation scores.
    assert record.eval_exit == 0, record.eval_output
    report = parse_eval_report(record.eval_report, source="report.json")
    assert report.candidate_record.name == TRAINED, report.candidate_record
    generation = report.tasks["generation"].metrics
    assert {"candidate", "base"} <= set(generation), generation
