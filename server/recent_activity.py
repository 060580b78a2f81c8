"""The last minute of this replica's traffic, per tenant, for the console's status page.

Prometheus counters are cumulative and labelled by model, not tenant: they answer "how much since
start-up" to an operator who scrapes them, not "how is MY traffic doing now" to a tenant. This keeps
the recent events themselves (a finished request's latency and status, a grounded answer's outcome)
in one bounded deque, drops those older than the window on every write and read, and summarises
what one viewer may see: its tenant's events, or everyone's for a platform admin.

One event loop writes and reads it and nothing here awaits, so no lock is needed. Memory is bounded
twice: by the window and by `max_events` (at the cap the oldest events go first, so under a flood
the summary covers less than the whole window rather than growing without end).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ragdock.quantiles import nearest_rank

WINDOW_S = 60.0
MAX_EVENTS = 50_000


@dataclass(frozen=True)
class RequestEvent:
    """A chat or completion request this replica finished answering."""

    at: float
    tenant: str
    latency_s: float
    status: int


@dataclass(frozen=True)
class OutcomeEvent:
    """A grounded chat's outcome: `answered` or `abstained`, and why."""

    at: float
    tenant: str
    status: str
    reason: str


@dataclass(frozen=True)
class ActivitySummary:
    """What one viewer's events in the window add up to."""

    requests: int
    errors: int
    latency_p50_s: float | None
    latency_p95_s: float | None
    grounded: int
    answered: int
    abstained: int
    abstentions_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def abstention_rate(self) -> float | None:
        return self.abstained / self.grounded if self.grounded else None


class RecentActivity:
    def __init__(
        self,
        *,
        window_s: float = WINDOW_S,
        max_events: int = MAX_EVENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        Args:
            window_s: how far back the summary looks, in seconds.
            max_events: the most events kept, whatever their age.
            clock: seconds on a clock that never goes back (tests pass their own).
        """
        self.window_s = window_s
        self._clock = clock
        self._events: deque[RequestEvent | OutcomeEvent] = deque(maxlen=max_events)
        self._in_flight: Counter[str] = Counter()

    # --- writes ---------------------------------------------------------------------------
    def started(self, tenant: str) -> None:
        """A request of `tenant` is being answered (until `ended`)."""
        self._in_flight[tenant] += 1

    def ended(self, tenant: str) -> None:
        """A request `started` is no longer being answered."""
        self._in_flight[tenant] -= 1
        if self._in_flight[tenant] <= 0:
            del self._in_flight[tenant]

    def request(self, tenant: str, latency_s: float, status: int) -> None:
        """A request of `tenant` was answered with HTTP `status` after `latency_s` seconds."""
        self._record(RequestEvent(self._clock(), tenant, latency_s, status))

    def outcome(self, tenant: str, status: str, reason: str) -> None:
        """A grounded chat of `tenant` was answered or abstained, for `reason`."""
        self._record(OutcomeEvent(self._clock(), tenant, status, reason))

    # --- reads ----------------------------------------------------------------------------
    def in_flight(self, viewer: str | None) -> int:
        """Requests being answered now: `viewer`'s (a tenant), or all of them (None)."""
        if viewer is None:
            return sum(self._in_flight.values())
        return self._in_flight.get(viewer, 0)

    def summary(self, viewer: str | None) -> ActivitySummary:
        """The window's events of `viewer` (a tenant), or of everyone (None), added up."""
        self._prune(self._clock())
        latencies: list[float] = []
        errors = 0
        outcomes: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for event in self._events:
            if viewer is not None and event.tenant != viewer:
                continue
            if isinstance(event, RequestEvent):
                latencies.append(event.latency_s)
                if event.status >= 500:
                    errors += 1
            else:
                outcomes[event.status] += 1
                if event.status == "abstained":
                    reasons[event.reason] += 1
        return ActivitySummary(
            requests=len(latencies),
            errors=errors,
            latency_p50_s=nearest_rank(latencies, 0.5) if latencies else None,
            latency_p95_s=nearest_rank(latencies, 0.95) if latencies else None,
            grounded=outcomes.total(),
            answered=outcomes["answered"],
            abstained=outcomes["abstained"],
            abstentions_by_reason=dict(sorted(reasons.items())),
        )

    def __len__(self) -> int:
        return len(self._events)

    def _record(self, event: RequestEvent | OutcomeEvent) -> None:
        self._prune(event.at)
        self._events.append(event)

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        events = self._events
        while events and events[0].at < horizon:
            events.popleft()
