"""Keep vLLM's worker from spinning a core for a second after every step.

The CPU engine runs its model in a worker process that reads each step's orders from a
shared-memory ring (`vllm.distributed.device_communicators.shm_broadcast`). After each read the
worker busy-waits (`sched_yield` in a loop) for `SpinCondition.busy_loop_s`, 1 s in vLLM 0.32,
before it falls back to sleeping on a socket until it is woken. On a GPU server that second is
noise; on a 2-core CPU machine it is a core taken from the embedder, the gateway and anything
else after every request: `python -m eval.perf.idle_engine` measured 22 CPU seconds in 40 s for
one short request every 5 s.

While a request is in flight the worker reads a new step every few milliseconds, so a short
spin keeps decode as fast as before; past it, the wake-up over the socket costs ~0.1 ms.
"""

from __future__ import annotations

import inspect
import logging
import os

logger = logging.getLogger(__name__)

# Longer than the gap between two steps of a busy engine (a decode step of the 270M model is
# ~50 ms on 2 cores), far shorter than vLLM's default. RAGDOCK_ENGINE_SPIN_S in the engine's
# environment overrides it (1 restores vLLM's own; eval/perf/idle_engine.py compares the two).
BUSY_LOOP_S = 0.1


def busy_loop_s() -> float:
    value = os.environ.get("RAGDOCK_ENGINE_SPIN_S", "")
    try:
        return max(0.0, float(value)) if value else BUSY_LOOP_S
    except ValueError:
        logger.warning(
            "ragdock: RAGDOCK_ENGINE_SPIN_S=%r is not a number; using %s", value, BUSY_LOOP_S
        )
        return BUSY_LOOP_S


def register() -> None:
    try:
        from vllm.distributed.device_communicators import shm_broadcast
    except ImportError:
        return
    condition = getattr(shm_broadcast, "SpinCondition", None)
    parameter = (
        inspect.signature(condition.__init__).parameters.get("busy_loop_s") if condition else None
    )
    if condition is None or parameter is None or parameter.default is inspect.Parameter.empty:
        logger.warning("ragdock: vLLM's SpinCondition has changed; its busy loop is left as is")
        return
    defaults = list(condition.__init__.__defaults__ or ())
    defaults[-1] = busy_loop_s()  # busy_loop_s is the last parameter with a default
    condition.__init__.__defaults__ = tuple(defaults)
