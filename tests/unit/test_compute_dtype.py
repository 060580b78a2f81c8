"""The dtype chooser: probe results injected, cache keyed by CPU, explicit settings win."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragdock.compute_dtype import CACHE_FILE, CpuIdentity, MatmulProbe, choose_dtype, run_probe

AVX2_EPYC = CpuIdentity(model="AMD EPYC 7B13", flags=("fma", "avx", "avx2"), torch_version="2.13.0")
BF16_EPYC = CpuIdentity(
    model="AMD EPYC 9B14", flags=("fma", "avx2", "avx512f", "avx512_bf16"), torch_version="2.13.0"
)
# Figures of the kind measured on each machine (2 threads).
SLOW_BF16 = MatmulProbe(size=256, fp32_gflops=104.0, bf16_gflops=0.3, threads=2, seconds=0.3)
FAST_BF16 = MatmulProbe(size=256, fp32_gflops=190.0, bf16_gflops=360.0, threads=2, seconds=0.16)


class CountingProbe:
    def __init__(self, result: MatmulProbe) -> None:
        self.result, self.calls = result, 0

    def __call__(self) -> MatmulProbe:
        self.calls += 1
        return self.result


def test_fp32_where_the_probe_says_bf16_is_slow(tmp_path: Path) -> None:
    choice = choose_dtype(
        "auto", home=tmp_path, device="cpu", probe=CountingProbe(SLOW_BF16), cpu=AVX2_EPYC
    )
    assert (choice.dtype, choice.source) == ("float32", "probe")
    assert "bf16 0.3 vs fp32 104.0 GFLOP/s" in choice.describe()
    assert "AMD EPYC 7B13" in choice.describe()


def test_bf16_where_the_probe_says_bf16_is_fast(tmp_path: Path) -> None:
    choice = choose_dtype(
        "auto", home=tmp_path, device="cpu", probe=CountingProbe(FAST_BF16), cpu=BF16_EPYC
    )
    assert (choice.dtype, choice.source) == ("bfloat16", "probe")
    assert "avx512_bf16" in choice.describe()
    record = choice.record()
    assert record["probe"]["bf16_speedup"] == pytest.approx(360 / 190, rel=1e-3)
    assert record["cpu_model"] == "AMD EPYC 9B14"


def test_the_answer_is_cached_per_cpu_and_reused(tmp_path: Path) -> None:
    slow, fast = CountingProbe(SLOW_BF16), CountingProbe(FAST_BF16)
    choose_dtype("auto", home=tmp_path, device="cpu", probe=slow, cpu=AVX2_EPYC)
    again = choose_dtype("auto", home=tmp_path, device="cpu", probe=slow, cpu=AVX2_EPYC)
    assert (again.dtype, again.source, slow.calls) == ("float32", "cache", 1)
    # Another CPU sharing the same home (a shared volume) measures for itself ...
    other = choose_dtype("auto", home=tmp_path, device="cpu", probe=fast, cpu=BF16_EPYC)
    assert (other.dtype, other.source, fast.calls) == ("bfloat16", "probe", 1)
    # ... and both answers stay, each under its own key.
    entries = json.loads((tmp_path / CACHE_FILE).read_text())
    assert set(entries) == {AVX2_EPYC.key, BF16_EPYC.key}


def test_the_cache_key_is_the_model_and_the_flags_not_the_flags_alone() -> None:
    same_flags = CpuIdentity(model="Intel Xeon", flags=AVX2_EPYC.flags, torch_version="2.13.0")
    other_flags = CpuIdentity(model=AVX2_EPYC.model, flags=("avx2",), torch_version="2.13.0")
    newer_torch = CpuIdentity(model=AVX2_EPYC.model, flags=AVX2_EPYC.flags, torch_version="2.14")
    reordered = CpuIdentity(
        model=AVX2_EPYC.model, flags=tuple(reversed(AVX2_EPYC.flags)), torch_version="2.13.0"
    )
    assert len({AVX2_EPYC.key, same_flags.key, other_flags.key, newer_torch.key}) == 4
    assert reordered.key == AVX2_EPYC.key


def test_an_explicit_setting_overrides_probe_and_cache(tmp_path: Path) -> None:
    probe = CountingProbe(SLOW_BF16)
    choose_dtype("auto", home=tmp_path, device="cpu", probe=probe, cpu=AVX2_EPYC)
    for setting, expected in (("bfloat16", "bfloat16"), ("bf16", "bfloat16"), ("fp32", "float32")):
        choice = choose_dtype(setting, home=tmp_path, device="cpu", probe=probe, cpu=AVX2_EPYC)
        assert (choice.dtype, choice.source) == (expected, "explicit")
    assert probe.calls == 1


def test_an_unknown_setting_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="use auto, bfloat16 or float32"):
        choose_dtype("float16", home=None)


def test_a_corrupt_cache_is_measured_again(tmp_path: Path) -> None:
    (tmp_path / CACHE_FILE).write_text("{not json")
    probe = CountingProbe(FAST_BF16)
    choice = choose_dtype("auto", home=tmp_path, device="cpu", probe=probe, cpu=BF16_EPYC)
    assert (choice.source, probe.calls) == ("probe", 1)
    assert BF16_EPYC.key in json.loads((tmp_path / CACHE_FILE).read_text())


def test_kernel_limits_in_the_environment_are_part_of_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: AMD EPYC\nflags\t\t: avx2 avx512_bf16\n")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    unlimited = CpuIdentity.of_this_machine(cpuinfo)
    # oneDNN limited to AVX2 on an AVX512_BF16 CPU emulates bf16: the same CPU, another answer.
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    limited = CpuIdentity.of_this_machine(cpuinfo)
    assert limited.kernel_limits == ("ONEDNN_MAX_CPU_ISA=AVX2",)
    assert limited.key != unlimited.key


def test_no_home_means_no_cache(tmp_path: Path) -> None:
    probe = CountingProbe(FAST_BF16)
    for _ in range(2):
        choose_dtype("auto", home=None, device="cpu", probe=probe, cpu=BF16_EPYC)
    assert probe.calls == 2


def test_cpu_identity_reads_model_and_flags_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    core = "model name\t: AMD EPYC 9B14\nflags\t\t: fpu avx2 avx512_bf16 amx_tile\n\n"
    cpuinfo.write_text("processor\t: 0\n" + core + "processor\t: 1\n" + core)
    cpu = CpuIdentity.of_this_machine(cpuinfo)
    assert cpu.model == "AMD EPYC 9B14"
    assert cpu.flags == ("fpu", "avx2", "avx512_bf16", "amx_tile")
    assert cpu.fast_bf16_flags == ["amx_tile", "avx512_bf16"]


def test_the_real_probe_measures_both_dtypes_quickly() -> None:
    probe = run_probe(size=64, budget_s=0.01)
    assert probe.fp32_gflops > 0 and probe.bf16_gflops > 0
    assert probe.size == 64 and probe.threads >= 1 and probe.seconds > 0
