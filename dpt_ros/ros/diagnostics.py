"""Frame counters, health over a recent window, and the /diagnostics status built from them.

Levels describe the recent past, not the whole run: a frame rejected at start-up is forgotten
once it leaves the window, while a node whose every recent frame fails reports ERROR.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from dpt_ros.alignment import AlignmentEstimate, AlignmentState

COUNTERS = ("received", "processed", "dropped", "rejected", "failed")
OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


@dataclass
class Health:
    level: int
    message: str


class FrameCounters:
    """One camera's cumulative counters and its recent events, shared by the subscription
    callbacks and the worker (hence its own lock)."""

    def __init__(self, history: int = 10_000, clock=time.monotonic):
        self._lock = threading.Lock()
        self._clock = clock
        self._totals = collections.Counter()
        self._events: collections.deque = collections.deque(maxlen=history)  # (time, kind)
        self._latencies: collections.deque = collections.deque(maxlen=history)  # (time, ms)
        self._last_problem = ""
        self._last_problem_time = -float("inf")
        self._unreported = False          # counted since the last ~/stats message
        self._processed_since_tick = False

    def count(self, kind: str, problem: str = "", latency_ms: float | None = None) -> None:
        if kind not in COUNTERS:
            raise ValueError(f"unknown counter {kind!r}")
        now = self._clock()
        with self._lock:
            self._totals[kind] += 1
            self._events.append((now, kind))
            if latency_ms is not None:
                self._latencies.append((now, latency_ms))
            if problem:
                self._last_problem, self._last_problem_time = problem, now
            self._unreported = True
            self._processed_since_tick |= kind == "processed"

    def totals(self) -> dict[str, int]:
        with self._lock:
            return {kind: self._totals[kind] for kind in COUNTERS}

    def reported(self) -> None:
        """A ~/stats message with the current totals was published."""
        with self._lock:
            self._unreported = False

    def stats_due_on_timer(self) -> bool:
        """Called once per timer period: whether a ~/stats message should be published for counts
        that no processed frame's stats carried (frames only rejected, failed or dropped). While
        frames are processed their own stats carry the counts, so the timer stays quiet."""
        with self._lock:
            due = self._unreported and not self._processed_since_tick
            self._processed_since_tick = False
            return due

    def recent(self, window_s: float) -> dict:
        """Counts, processing rate (Hz) and median latency over the last ``window_s`` seconds."""
        now = self._clock()
        with self._lock:
            counts = collections.Counter(kind for t, kind in self._events if now - t <= window_s)
            done = [t for t, kind in self._events if kind == "processed" and now - t <= window_s]
            latencies = sorted(ms for t, ms in self._latencies if now - t <= window_s)
            problem = self._last_problem if now - self._last_problem_time <= window_s else ""
            last_received = max((t for t, kind in self._events if kind == "received"), default=None)
        rate = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0.0
        return {"counts": {kind: counts[kind] for kind in COUNTERS}, "rate_hz": rate,
                "latency_p50_ms": latencies[len(latencies) // 2] if latencies else 0.0,
                "problem": problem,
                "since_last_image_s": None if last_received is None else now - last_received}


def camera_health(recent: dict, ever_received: bool, window_s: float, image_topic: str) -> Health:
    """The level of one camera from its recent counters (see FrameCounters.recent)."""
    counts = recent["counts"]
    bad = counts["rejected"] + counts["failed"]
    if counts["received"] == 0 and bad == 0:
        if not ever_received:
            return Health(WARN, f"waiting for images on {image_topic}")
        return Health(WARN, f"no images on {image_topic} for {recent['since_last_image_s']:.0f} s")
    if bad and counts["processed"] == 0:
        return Health(ERROR, f"no frame succeeded in the last {window_s:g} s ({bad} rejected or failed): "
                             f"{recent['problem']}")
    if bad:
        return Health(WARN, f"{bad} of {counts['received']} frames rejected or failed in the last "
                            f"{window_s:g} s: {recent['problem']}")
    return Health(OK, "running")


def alignment_health(estimate: AlignmentEstimate, topic: str, received: int) -> Health:
    """The level of one camera's online alignment: WARN whenever its metric outputs are stopped."""
    state = AlignmentState(estimate.state).name
    if estimate.usable:
        return Health(OK, f"aligned ({state}): {estimate.message}")
    if received == 0:
        return Health(WARN, f"no metric depth: nothing received on {topic}")
    if estimate.state == AlignmentState.STALE:
        return Health(WARN, f"no metric depth: no accepted fit for {estimate.age:.1f} s (alignment.timeout): "
                            f"{estimate.message}")
    return Health(WARN, f"no metric depth: no alignment yet: {estimate.message}")


def alignment_values(estimate: AlignmentEstimate, topic: str, received: int) -> dict:
    return {"state": AlignmentState(estimate.state).name, "mode": estimate.mode, "scale": f"{estimate.scale:.6g}",
            "shift": f"{estimate.shift:.6g}", "samples": estimate.samples, "inliers": estimate.inliers,
            "residual": f"{estimate.residual:.4g}", "age_s": f"{estimate.age:.3f}", "sensor_topic": topic,
            "sensor_messages_received": received, "last_message": estimate.message}


def status(name: str, hardware_id: str, health: Health, values: dict) -> DiagnosticStatus:
    return DiagnosticStatus(level=health.level, name=name, message=health.message[:300], hardware_id=hardware_id,
                            values=[KeyValue(key=key, value=str(value)) for key, value in values.items()])
