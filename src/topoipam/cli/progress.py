"""Progress on stderr for commands that can run long on a large datastore, only when stderr is a terminal.

    with progress_for(ctx, "check: reading blocks") as bar:
        work(progress=bar.update)        # bar.update(done, total=None), called as often as you like
        bar.stage("check: comparing")    # a new phase, drawn at once

Redraws are throttled (at most one per ``INTERVAL`` seconds, one line rewritten with
``\\r``) and the line is erased when the block ends, so nothing is left between the
command's own messages. When stderr is not a terminal (a pipe, a file, CI) nothing
at all is written: scripts reading stderr see only the command's messages.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

INTERVAL = 0.1  # seconds between redraws
CLEAR = "\r\033[K"  # carriage return, erase to end of line


class Progress:
    def __init__(self, stream, label: str, enabled: bool, clock=time.monotonic) -> None:
        self.stream, self.label, self.enabled, self.clock = stream, label, enabled, clock
        self._last = None  # time of the last redraw, None before the first
        self.drawn = False

    def update(self, done: int, total: int | None = None) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if self._last is not None and now - self._last < INTERVAL and done != total:
            return
        self._last = now
        text = f"{self.label}: {done:,}" + (f"/{total:,} ({100 * done // total}%)" if total else "")
        self._draw(text)

    def stage(self, label: str) -> None:
        self.label = label
        if self.enabled:
            self._last = self.clock()
            self._draw(f"{label} ...")

    def _draw(self, text: str) -> None:
        self.stream.write(CLEAR + text)
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write(CLEAR)
            self.stream.flush()
            self.drawn = False


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


@contextmanager
def progress_for(ctx, label: str):
    """A ``Progress`` on ``ctx.err``, drawn only if it is a terminal, erased at the end (errors included)."""
    bar = Progress(ctx.err, label, _is_terminal(ctx.err))
    bar.stage(label)
    try:
        yield bar
    finally:
        bar.close()
