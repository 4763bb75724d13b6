"""A dependency-free progress bar for long commands (sampling steps, bench cells, training)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``[#####.....] 12/50 desc  3.1 s`` on stderr. On a terminal the line is redrawn in place; otherwise (logs,
    CI) a line is printed at every tenth of the way, so output stays short. ``enabled=False`` prints nothing."""

    def __init__(self, total: int, desc: str = "", *, stream: TextIO | None = None, enabled: bool = True,
                 width: int = 24) -> None:
        self.total, self.desc, self.width, self.enabled = max(total, 1), desc, width, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.start = time.perf_counter()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_tenth = -1

    def update(self, n: int = 1, note: str = "") -> None:
        self.done = min(self.done + n, self.total)
        if not self.enabled:
            return
        tenth = self.done * 10 // self.total
        if not self._tty and tenth == self._last_tenth:
            return
        self._last_tenth = tenth
        filled = self.done * self.width // self.total
        line = (f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {self.desc} "
                f"{time.perf_counter() - self.start:.1f} s {note}".rstrip())
        self.stream.write(("\r" + line) if self._tty else (line + "\n"))
        if self._tty and self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled and self._tty and self.done < self.total:
            self.stream.write("\n")
