"""The vLLM general plugin ragdock installs (entry point `ragdock_cpu`, pyproject.toml).

vLLM loads it in every engine process. On the CPU platform it installs, each with its reasons
in its own module:
- engine/cpu_lora.py: per-slot multi-LoRA kernels (correct and fast where vLLM's are neither);
- engine/cpu_norms.py: vLLM's own C++ RMSNorm kernels in place of eager torch;
- engine/cpu_idle.py: a worker that stops spinning 0.1 s after a step, not 1 s.
On any other platform it does nothing. `VLLM_PLUGINS` set to a list without `ragdock_cpu` turns
all of it off.
"""

from __future__ import annotations


def register() -> None:
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from engine import cpu_idle, cpu_lora, cpu_norms

    cpu_lora.register()
    cpu_norms.register()
    cpu_idle.register()
