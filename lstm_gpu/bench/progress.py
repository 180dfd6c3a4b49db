"""A small progress bar on stderr: one line, redrawn in place, only on a terminal."""
from __future__ import annotations

import shutil
import sys
import time
from typing import Optional, TextIO


class Progress:
    """Call with (done, total, text). Silent when disabled or when the stream is not a TTY."""

    def __init__(self, stream: Optional[TextIO] = None, enabled: bool = True, width: int = 24):
        self.stream = stream or sys.stderr
        self.enabled = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self.columns = max(40, shutil.get_terminal_size((100, 24)).columns - 1)
        self.t0 = None
        self._shown = False

    def __call__(self, done: int, total: int, text: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        frac = done / total if total else 1.0
        fill = int(round(frac * self.width))
        bar = "#" * fill + "." * (self.width - fill)
        elapsed = now - self.t0
        eta = f" ~{elapsed / done * (total - done):.0f}s left" if 0 < done < total else ""
        line = f"[{bar}] {done}/{total} {elapsed:.0f}s{eta}  {text}"
        self.stream.write("\r" + line[:self.columns].ljust(self.columns))
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\r" + " " * self.columns + "\r")
            self.stream.flush()
            self._shown = False
