"""Which float dtype this machine computes fast: `auto` resolves to bf16 or fp32 by measuring.

Why not a fixed default: on CPUs with AVX512_BF16 or AMX, torch's bf16 matmul runs several times
faster than fp32, while on CPUs with AVX2 only it is emulated and runs ~300x slower than fp32
(0.3 vs 104 GFLOP/s, 2048^3 on 2 threads of an AVX2 EPYC). Flags alone do not settle it (a
flag can be present while the library in use lacks the kernel), so a short matmul probe decides,
and its answer is cached per machine under RAGDOCK_HOME, keyed by the CPU model, its flags and
the torch version. On a GPU, bf16 where the GPU supports it, else fp32 (fp16 overflows in Gemma's
activations, so it is never chosen). An explicit `bfloat16` / `float32` always wins.

Nothing heavy happens at import time: torch is imported by the probe only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

DtypeSetting = Literal["auto", "bfloat16", "float32"]
ComputeDtype = Literal["bfloat16", "float32"]

# bf16 is chosen when its matmul is at least this fast relative to fp32. Measured ratios sit far
# from 1 on both kinds of CPU (several x above on AVX512_BF16, ~300x below on AVX2), so the exact
# value hardly matters; at a tie bf16 still halves memory and memory traffic.
BF16_MIN_SPEEDUP = 1.0
PROBE_SIZE = 256  # one 256^3 bf16 product takes ~0.1 s where bf16 is emulated
PROBE_BUDGET_S = 0.08  # timed repetitions per dtype, after one warm-up product
CACHE_FILE = "compute-dtype.json"
# Variables that make torch pick other CPU kernels on the same CPU (oneDNN's and ATen's ISA caps).
_KERNEL_LIMITS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


@dataclass(frozen=True)
class CpuIdentity:
    """What the probe's answer is cached under: the CPU model, its flags and torch's version."""

    model: str
    flags: tuple[str, ...]
    torch_version: str
    kernel_limits: tuple[str, ...] = ()  # e.g. ONEDNN_MAX_CPU_ISA=AVX2: other kernels, same CPU

    @property
    def key(self) -> str:
        parts = [self.model, " ".join(sorted(self.flags)), self.torch_version, *self.kernel_limits]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    @property
    def fast_bf16_flags(self) -> list[str]:
        """The flags that usually mean fast bf16 (shown to people; the probe decides)."""
        return sorted(f for f in self.flags if f in {"avx512_bf16", "amx_bf16", "amx_tile"})

    @classmethod
    def of_this_machine(cls, cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuIdentity:
        """Read from /proc/cpuinfo (first core); elsewhere, what `platform` knows."""
        fields: dict[str, str] = {}
        with contextlib.suppress(OSError):
            for line in cpuinfo.read_text(errors="replace").splitlines():
                name, _, value = line.partition(":")
                fields.setdefault(name.strip(), value.strip())
        model = fields.get("model name") or platform.processor() or platform.machine()
        flags = fields.get("flags") or fields.get("Features") or ""  # x86 / Arm
        limits = tuple(f"{k}={os.environ[k]}" for k in _KERNEL_LIMITS if os.environ.get(k))
        return cls(
            model=model,
            flags=tuple(flags.split()),
            torch_version=_torch_version(),
            kernel_limits=limits,
        )


@dataclass(frozen=True)
class MatmulProbe:
    """Measured matmul speed of both dtypes, on all of torch's threads."""

    size: int
    fp32_gflops: float
    bf16_gflops: float
    threads: int
    seconds: float

    @property
    def bf16_speedup(self) -> float:
        return self.bf16_gflops / self.fp32_gflops if self.fp32_gflops > 0 else 0.0


@dataclass(frozen=True)
class DtypeChoice:
    """The resolved dtype and why.

    Attributes:
        dtype: what to compute in.
        source: 'explicit' (the setting named it), 'gpu', 'probe' (measured now) or 'cache'
            (measured earlier on this CPU).
        cpu: the machine's identity (None for an explicit setting or a GPU).
        probe: the measurement behind an 'auto' choice on CPU.
    """

    dtype: ComputeDtype
    source: Literal["explicit", "gpu", "probe", "cache"]
    cpu: CpuIdentity | None = None
    probe: MatmulProbe | None = None

    def describe(self) -> str:
        """One line for banners and logs, e.g. 'float32 (auto: bf16 0.3 vs fp32 104 GFLOP/s...)'."""
        if self.source == "explicit":
            return f"{self.dtype} (set explicitly)"
        if self.source == "gpu":
            return f"{self.dtype} (auto: GPU)"
        assert self.probe is not None and self.cpu is not None
        flags = ", ".join(self.cpu.fast_bf16_flags) or "no AVX512_BF16/AMX flag"
        when = (
            f"probed now in {self.probe.seconds:.2f} s"
            if self.source == "probe"
            else "probed earlier on this CPU"
        )
        return (
            f"{self.dtype} (auto: matmul {self.probe.size}^3 on {self.probe.threads} threads, "
            f"bf16 {self.probe.bf16_gflops:.1f} vs fp32 {self.probe.fp32_gflops:.1f} GFLOP/s, "
            f"{when}; CPU {self.cpu.model}; {flags})"
        )

    def record(self) -> dict[str, Any]:
        """The choice as JSON-ready data, for manifests and reports."""
        data: dict[str, Any] = {"dtype": self.dtype, "source": self.source}
        if self.cpu is not None:
            data["cpu_model"] = self.cpu.model
            data["cpu_key"] = self.cpu.key
            data["fast_bf16_flags"] = self.cpu.fast_bf16_flags
        if self.probe is not None:
            data["probe"] = asdict(self.probe) | {"bf16_speedup": round(self.probe.bf16_speedup, 4)}
        return data


def choose_dtype(
    setting: str,
    *,
    home: Path | None,
    device: str = "auto",
    probe: Callable[[], MatmulProbe] | None = None,
    cpu: CpuIdentity | None = None,
) -> DtypeChoice:
    """Resolve a dtype setting for this machine.

    Args:
        setting: 'auto', 'bfloat16' or 'float32' ('bf16', 'fp32', 'float' are accepted too).
        home: RAGDOCK_HOME, where the probe's answer is cached; None caches nothing.
        device: 'cpu', 'cuda' or 'auto' (a GPU when torch sees one): where it computes.
        probe: measures both dtypes (default `run_probe`); injected by tests.
        cpu: this machine's identity (default read from /proc/cpuinfo); injected by tests.

    Returns:
        The choice, with the measurement behind it.

    Raises:
        ValueError: the setting names no supported dtype.
    """
    explicit = _ALIASES.get(setting.strip().lower())
    if explicit is None:
        raise ValueError(f"dtype {setting!r} is not supported; use auto, bfloat16 or float32")
    if explicit != "auto":
        return DtypeChoice(dtype=explicit, source="explicit")
    if device == "auto":
        device = default_device()
    if device.startswith("cuda"):
        return DtypeChoice(dtype=_gpu_dtype(), source="gpu")
    cpu = cpu or CpuIdentity.of_this_machine()
    cache = home / CACHE_FILE if home is not None else None
    cached = _read_cache(cache, cpu) if cache is not None else None
    if cached is not None:
        return DtypeChoice(dtype=_decide(cached), source="cache", cpu=cpu, probe=cached)
    measured = (probe or run_probe)()
    if cache is not None:
        _write_cache(cache, cpu, measured)
    return DtypeChoice(dtype=_decide(measured), source="probe", cpu=cpu, probe=measured)


def run_probe(size: int = PROBE_SIZE, budget_s: float = PROBE_BUDGET_S) -> MatmulProbe:
    """Time square matmuls in fp32 and bf16 on torch's threads (~0.2-0.4 s in all).

    Each dtype gets one warm-up product (kernel selection), then repetitions until `budget_s`
    has passed, so a slow emulated bf16 costs one or two products, not a fixed count of them.
    """
    import torch

    started = time.perf_counter()
    rates: dict[torch.dtype, float] = {}
    generator = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(size, size, generator=generator).to(dtype)
        b = torch.randn(size, size, generator=generator).to(dtype)
        torch.mm(a, b)
        reps, begun = 0, time.perf_counter()
        while True:
            torch.mm(a, b)
            reps += 1
            elapsed = time.perf_counter() - begun
            if elapsed >= budget_s:
                break
        rates[dtype] = 2 * size**3 * reps / elapsed / 1e9
    return MatmulProbe(
        size=size,
        fp32_gflops=round(rates[torch.float32], 2),
        bf16_gflops=round(rates[torch.bfloat16], 2),
        threads=torch.get_num_threads(),
        seconds=round(time.perf_counter() - started, 3),
    )


def torch_dtype(dtype: ComputeDtype) -> Any:
    """The torch dtype object for a resolved dtype name."""
    import torch

    return {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]


_ALIASES: dict[str, DtypeSetting] = {
    "auto": "auto",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
}


def _decide(probe: MatmulProbe) -> ComputeDtype:
    return "bfloat16" if probe.bf16_speedup >= BF16_MIN_SPEEDUP else "float32"


def default_device() -> str:
    """'cuda' where torch sees a GPU, else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _gpu_dtype() -> ComputeDtype:
    import torch

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"


def _torch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return "none"


def _read_cache(path: Path, cpu: CpuIdentity) -> MatmulProbe | None:
    try:
        entry = json.loads(path.read_text())[cpu.key]
        return MatmulProbe(**entry["probe"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent, unreadable or from an older layout: measure again


def _write_cache(path: Path, cpu: CpuIdentity, probe: MatmulProbe) -> None:
    """Add this CPU's entry; several machines may share one RAGDOCK_HOME (a shared volume)."""
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, dict):
            entries = {}
    except (OSError, ValueError):
        entries = {}
    entries[cpu.key] = {
        "cpu_model": cpu.model,
        "torch": cpu.torch_version,
        "fast_bf16_flags": cpu.fast_bf16_flags,
        "probe": asdict(probe),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    # Written whole and renamed, so a reader never sees half a file; a lost race only costs
    # another probe later.
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        # One temporary file per writer, so two threads of one process never share it either.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(entries, indent=2) + "\n")
        os.replace(tmp, path)
