"""A rate-limited progress line for a sweep: runs done, rounds/s, ETA."""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import TextIO

__all__ = ["Progress"]


def _fmt_time(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class Progress:
    """A rate-limited progress line on ``stream`` (stderr): runs done, rounds/s, ETA.

    On a terminal the line is redrawn in place (at most every ``interval`` s, and a
    background ticker keeps the clock moving); elsewhere a new line is printed at most
    every ``interval_pipe`` s.  ``enabled=False`` prints nothing.
    """

    def __init__(self, *, label: str = "sweep", enabled: bool = True, stream: TextIO | None = None,
                 interval: float = 0.25, interval_pipe: float = 5.0):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.label = label
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if self.tty else interval_pipe
        self._lock = threading.Lock()
        self._last = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.total = self.to_run = self.done = self.cached = self.failed = self.diverged = 0
        self.rounds_total = self.rounds_done = 0
        self._partial = 0  # rounds of the run in progress (serial execution)
        self.t0 = time.perf_counter()

    # -- events -----------------------------------------------------------------
    def start(self, total: int, cached: int, rounds_to_run: int) -> None:
        self.total, self.cached, self.to_run = total, cached, total - cached
        self.rounds_total = rounds_to_run
        self.t0 = time.perf_counter()
        if self.enabled and self.tty:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        self._render(force=True)

    def rounds(self, current_run_rounds: int) -> None:
        """Serial execution: rounds done so far in the current run."""
        self._partial = current_run_rounds
        self._render()

    def finished(self, rounds: int, *, failed: bool = False, diverged: bool = False) -> None:
        with self._lock:
            self.done += 1
            self.rounds_done += rounds
            self._partial = 0
            self.failed += failed
            self.diverged += diverged
        self._render(force=self.done == self.to_run)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self.enabled and self.tty:
            with self._lock:
                self.stream.write("\n")
                self.stream.flush()

    # -- drawing ----------------------------------------------------------------
    def line(self) -> str:
        el = time.perf_counter() - self.t0
        rd = self.rounds_done + self._partial
        rate = rd / el if el > 0 else 0.0
        eta = (self.rounds_total - rd) / rate if rate > 0 else float("nan")
        parts = [f"[{self.label}] {self.done + self.cached}/{self.total} runs"]
        extra = []
        if self.cached:
            extra.append(f"{self.cached} stored before")
        if self.diverged:
            extra.append(f"{self.diverged} diverged")
        if self.failed:
            extra.append(f"{self.failed} failed")
        if extra:
            parts[0] += f" ({', '.join(extra)})"
        parts.append(f"{rate:,.0f} rounds/s")
        parts.append(f"elapsed {_fmt_time(el)}")
        if self.done < self.to_run:
            parts.append(f"ETA {_fmt_time(eta)}")
        return " | ".join(parts)

    def _render(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        with self._lock:
            if not force and now - self._last < self.interval:
                return
            self._last = now
            text = self.line()
            if self.tty:
                self.stream.write("\r" + text + "\x1b[K")
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self._render()
