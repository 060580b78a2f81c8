"""The CPU engine's kernel swaps (engine/cpu_norms.py, engine/cpu_idle.py) against vLLM's own
reference implementations, on this machine's CPU."""

from __future__ import annotations

import inspect

import pytest
import torch
from vllm import ir

from engine import cpu_idle, cpu_norms


@pytest.fixture(scope="module", autouse=True)
def registered() -> None:
    cpu_norms.register()


def _native(op: object) -> object:
    return op.impls["native"].impl_fn  # type: ignore[attr-defined]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(7, 640), (9, 4, 256), (1, 640)])
def test_rms_norm_matches_vllms_reference(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=dtype) * 3
    gemma_weight = torch.randn(shape[-1]).float() + 1.0  # Gemma passes (1 + w) in float32
    impl = ir.ops.rms_norm.impls[cpu_norms.PROVIDER]
    assert impl.supports_args(x, gemma_weight, 1e-6)
    ours = impl.impl_fn(x, gemma_weight, 1e-6)
    reference = _native(ir.ops.rms_norm)(x, gemma_weight, 1e-6)  # type: ignore[operator]
    assert ours.shape == x.shape and ours.dtype == x.dtype
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(ours, reference, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fused_add_rms_norm_matches_vllms_reference(dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    x, residual = torch.randn(5, 640, dtype=dtype), torch.randn(5, 640, dtype=dtype)
    weight = torch.rand(640) + 0.5
    expected_out, expected_sum = _native(ir.ops.fused_add_rms_norm)(  # type: ignore[operator]
        x.clone(), residual.clone(), weight, 1e-6
    )
    impl = ir.ops.fused_add_rms_norm.impls[cpu_norms.PROVIDER]
    assert impl.supports_args(x, residual, weight, 1e-6)
    out, summed = impl.impl_fn(x, residual, weight, 1e-6)
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(summed, expected_sum, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(out, expected_out, rtol=tolerance, atol=tolerance)


def test_calls_the_kernels_cannot_take_go_to_the_native_implementation() -> None:
    x = torch.randn(4, 64)
    rms = ir.ops.rms_norm.impls[cpu_norms.PROVIDER]
    assert not rms.supports_args(x, None, 1e-6)  # no weight
    assert not rms.supports_args(x, torch.ones(64), 1e-6, 32)  # variance over a prefix
    assert not rms.supports_args(x.to(torch.float16), torch.ones(64), 1e-6)
    assert not rms.supports_args(x.t(), torch.ones(4), 1e-6)  # strided rows
    fused = ir.ops.fused_add_rms_norm.impls[cpu_norms.PROVIDER]
    assert not fused.supports_args(x, x.to(torch.bfloat16), torch.ones(64), 1e-6)


def test_the_worker_spins_a_tenth_of_a_second_not_a_whole_one() -> None:
    from vllm.distributed.device_communicators import shm_broadcast

    cpu_idle.register()
    parameter = inspect.signature(shm_broadcast.SpinCondition.__init__).parameters["busy_loop_s"]
    assert parameter.default == cpu_idle.BUSY_LOOP_S == 0.1
