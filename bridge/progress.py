"""Progress of one copy: a live line on a terminal, log lines otherwise.

Interactive runs (stderr is a TTY, or BRIDGE_PROGRESS=always) get one line
rewritten in place: bytes, files, rate and ETA. Daemon runs get a DEBUG line
per file and one INFO line per copied version, which the JSON log format turns
into fields a log pipeline can chart.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TextIO

log = logging.getLogger(__name__)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def human_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    """Thread-safe counters for one version's copy."""

    def __init__(
        self,
        label: str,
        total_bytes: int,
        total_files: int,
        *,
        live: bool,
        stream: TextIO | None = None,
        interval: float = 0.2,
        clock=time.monotonic,
    ):
        self.label = label
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.live = live
        self.stream = stream or sys.stderr
        self.interval = interval
        self.clock = clock
        self.bytes = 0
        self.files = 0
        self.started = clock()
        self._last_draw = 0.0
        self._lock = threading.Lock()

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes += n
            self._maybe_draw()

    def file_done(self, path: str, size: int, mode: str) -> None:
        with self._lock:
            self.files += 1
            self._maybe_draw(force=self.files == self.total_files)
        log.debug("%s: copied %s (%d bytes, %s)", self.label, path, size, mode)

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-6)
        rate = self.bytes / elapsed
        left = self.total_bytes - self.bytes
        eta = human_seconds(left / rate) if rate > 0 and left > 0 else "-"
        return (
            f"{self.label}: {human_bytes(self.bytes)} / {human_bytes(self.total_bytes)}, "
            f"{self.files}/{self.total_files} files, {human_bytes(rate)}/s, ETA {eta}"
        )

    def _maybe_draw(self, force: bool = False) -> None:
        if not self.live:
            return
        now = self.clock()
        if force or now - self._last_draw >= self.interval:
            self._last_draw = now
            self.stream.write("\r\x1b[K" + self.line())
            self.stream.flush()

    def finish(self, mode: str) -> None:
        elapsed = max(self.clock() - self.started, 1e-6)
        if self.live:
            self.stream.write("\r\x1b[K" + self.line() + "\n")
            self.stream.flush()
        log.info(
            "%s: copied %d files, %s in %.1fs (%s/s, %s)",
            self.label,
            self.files,
            human_bytes(self.bytes),
            elapsed,
            human_bytes(self.bytes / elapsed),
            mode,
            extra={
                "bytes": self.bytes,
                "files": self.files,
                "seconds": round(elapsed, 3),
                "mode": mode,
            },
        )


def is_live(setting: str, stream: TextIO | None = None) -> bool:
    if setting == "always":
        return True
    if setting == "never":
        return False
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())
