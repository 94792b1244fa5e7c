"""Timing knobs of the job machinery, read from the environment once per process.

They live here rather than in :class:`fhirlake.config.Settings` because only the job processes
and the status endpoint use them; every variable is listed in docs/decisions.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from exc


@dataclass(frozen=True)
class JobTiming:
    heartbeat_seconds: float = 2.0  # how often a running job proves its worker is alive
    stale_seconds: float = 20.0  # a running job silent this long is presumed orphaned and re-claimed
    idle_poll_seconds: float = 0.25  # how often an idle worker looks for work
    status_retry_after: int = 1  # Retry-After (s) suggested to a client polling a running job
    min_poll_interval: float = 0.2  # polls closer together than this answer 429
    max_attempts: int = 5  # a job that killed its worker this often is failed, not retried forever

    @classmethod
    def from_env(cls) -> JobTiming:
        d = cls()
        return cls(
            heartbeat_seconds=_float("FHIRLAKE_JOB_HEARTBEAT_SECONDS", d.heartbeat_seconds),
            stale_seconds=_float("FHIRLAKE_JOB_STALE_SECONDS", d.stale_seconds),
            idle_poll_seconds=_float("FHIRLAKE_JOB_IDLE_POLL_SECONDS", d.idle_poll_seconds),
            status_retry_after=int(_float("FHIRLAKE_JOB_STATUS_RETRY_AFTER", d.status_retry_after)),
            min_poll_interval=_float("FHIRLAKE_JOB_MIN_POLL_INTERVAL", d.min_poll_interval),
            max_attempts=int(_float("FHIRLAKE_JOB_MAX_ATTEMPTS", d.max_attempts)),
        )
