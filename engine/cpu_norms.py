"""RMSNorm on vLLM's CPU backend through vLLM's own C++ kernels instead of eager torch.

vLLM 0.32 routes RMSNorm through its IR ops, whose C++ implementation (`vllm_c`) is registered for
GPUs only, so the CPU build runs the native one: five eager torch passes in float32 over every
activation. Profiled with py-spy on a 900-token prefill of Gemma 3 270M in bf16 (AMD EPYC,
avx512_bf16, 2 threads), that native path was ~10% of the step; the C++ kernel the CPU build
already ships (`torch.ops._C.rms_norm`, `fused_add_rms_norm`) does the same work 10-25x faster.

Gemma's norm scales by (1 + w), which vLLM passes as a float32 weight. The C++ kernels want the
weight in the activations' dtype, so it is cast first: (1 + w) is rounded to bf16 once, an error
of at most half a bf16 step on the scale, the size of the rounding the output gets anyway.

Installed by `register()` (from ragdock's vLLM plugin, engine/cpu_plugin.py) as a new provider,
`ragdock_cpu`; the engine is started with `--kernel-config` putting it ahead of `native` (see
engine/launcher.py), so turning it off is dropping that flag (`engine_cpu_kernels: false`).
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

PROVIDER = "ragdock_cpu"
DTYPES = (torch.bfloat16, torch.float32)


def _fits(x: torch.Tensor, weight: torch.Tensor | None) -> bool:
    return weight is not None and x.dtype in DTYPES and x.dim() >= 2 and x.stride(-1) == 1


# vLLM checks that these match the native op's parameter names and defaults.
def _rms_norm_fits(
    x: torch.Tensor, weight: torch.Tensor | None, epsilon: float, variance_size: int | None = None
) -> bool:
    return variance_size is None and _fits(x, weight)


def _fused_add_fits(
    x: torch.Tensor,
    x_residual: torch.Tensor,
    weight: torch.Tensor | None,
    epsilon: float,
    variance_size: int | None = None,
) -> bool:
    return (
        variance_size is None
        and _fits(x, weight)
        and x.is_contiguous()
        and x_residual.is_contiguous()
        and x_residual.dtype == x.dtype
    )


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor | None, epsilon: float, variance_size: int | None = None
) -> torch.Tensor:
    assert weight is not None  # _fits routes weightless calls to the native implementation
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    out = torch.empty_like(rows)
    torch.ops._C.rms_norm(out, rows, weight.to(x.dtype), epsilon)
    return out.view(x.shape)


def fused_add_rms_norm(
    x: torch.Tensor,
    x_residual: torch.Tensor,
    weight: torch.Tensor | None,
    epsilon: float,
    variance_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    assert weight is not None
    # The kernel works in place: x becomes the normalized sum, x_residual the sum.
    torch.ops._C.fused_add_rms_norm(x, x_residual, weight.to(x.dtype), epsilon)
    return x, x_residual


def register() -> None:
    from vllm import ir
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    # The platform loads the kernel build this CPU can run (`_C` needs AVX512_BF16, `_C_AVX512`
    # AVX-512, `_C_AVX2` AVX2; each registers torch.ops._C). Importing `vllm._C` directly dies
    # with SIGILL on an AVX2-only CPU.
    current_platform.import_kernels()
    if not hasattr(torch.ops._C, "rms_norm") or PROVIDER in ir.ops.rms_norm.impls:
        return
    ir.ops.rms_norm.register_impl(PROVIDER, supports_args=_rms_norm_fits)(rms_norm)
    ir.ops.fused_add_rms_norm.register_impl(
        PROVIDER,
        supports_args=_fused_add_fits,
        inplace=True,
    )(fused_add_rms_norm)
    logger.info("ragdock: vLLM's C++ RMSNorm kernels installed for the CPU backend")
