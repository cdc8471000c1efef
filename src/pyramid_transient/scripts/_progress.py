"""Progress of ``backup`` and ``restore`` on stderr: a bar on a terminal (tqdm when it is
installed, else a line redrawn in place), plain lines every :data:`INTERVAL` seconds
otherwise (a log, a cron mail)."""

from __future__ import annotations

import time
from typing import Any, TextIO

#: Seconds between two plain progress lines when stderr is not a terminal.
INTERVAL = 10.0

#: The clock progress reads (tests patch it).
clock = time.monotonic


def _eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Counts ``keys`` done out of ``total`` (an estimate: ``~``) in units of ``work``
    (keys, or bytes of the file read for a restore, which gives the ETA)."""

    def __init__(
        self, what: str, stream: TextIO, *, total: int, estimate: bool = False, quiet: bool = False
    ) -> None:
        self.what = what
        self.stream = stream
        self.total = max(total, 0)
        self.estimate = estimate
        self.quiet = quiet
        self.keys = 0
        self.work = 0
        self.start = clock()
        self.last = self.start
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._bar: Any = None
        if self.tty and not quiet:
            try:
                from tqdm import tqdm
            except ImportError:  # optional: ptransient draws its own line
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(
                    total=self.total or None,
                    desc=what,
                    unit="key" if not estimate else "",
                    file=stream,
                    dynamic_ncols=True,
                    leave=True,
                )

    def line(self) -> str:
        elapsed = max(clock() - self.start, 1e-9)
        rate = self.keys / elapsed
        text = f"{self.what}: {self.keys:,} keys"
        if self.total:
            share = min(self.work / self.total, 1.0)
            text += f" ({share:.0%}{' of an estimate' if self.estimate else ''})"
            per = self.work / elapsed
            if per > 0 and share < 1:
                text += f", ETA {_eta((self.total - self.work) / per)}"
        return text + f", {rate:,.0f} keys/s"

    def advance(self, keys: int, work: int | None = None) -> None:
        self.keys += keys
        step = keys if work is None else work - self.work
        self.work += step
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(step)
            self._bar.set_postfix_str(f"{self.keys:,} keys", refresh=False)
            return
        now = clock()
        if self.tty:
            if now - self.last >= 0.2:
                self.last = now
                self.stream.write("\r" + self.line() + "\x1b[K")
                self.stream.flush()
        elif now - self.last >= INTERVAL:
            self.last = now
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.close()
        elif self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K\n")
            self.stream.flush()
