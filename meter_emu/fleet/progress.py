"""A progress bar for starting and stopping a fleet: redrawn in place on a terminal, a line
every few seconds otherwise (a log file, a CI job), and silent for small fleets."""

from __future__ import annotations

import sys
import time

#: fleets smaller than this start and stop without a bar
MIN_COUNT = 1000
WIDTH = 30
LOG_EVERY = 5.0  # seconds between lines when the output is not a terminal


class Progress:
    def __init__(self, total: int, what: str, *, stream=None):
        self.total, self.what = total, what
        self.stream = stream or sys.stderr
        self.shown = total >= MIN_COUNT
        self.tty = self.shown and self.stream.isatty()
        self.start = self._last = time.monotonic()
        self.done = 0

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if not self.shown or (not self.tty and now - self._last < LOG_EVERY
                              and done < self.total):
            return
        if self.tty and now - self._last < 0.1 and done < self.total:
            return
        self._last = now
        filled = WIDTH * done // max(self.total, 1)
        text = (f"meter-emu: {self.what} [{'#' * filled}{'.' * (WIDTH - filled)}] "
                f"{done}/{self.total} meters {now - self.start:.1f} s")
        if self.tty:
            end = "\n" if done >= self.total else ""
            self.stream.write(f"\r{text}{end}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.done < self.total:
            self.update(self.total)
