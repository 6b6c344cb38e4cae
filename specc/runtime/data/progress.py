"""Progress lines for stage jobs: a rich progress bar on a terminal, plain lines in a log file."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, stage: str, description: str, total: int | None = None):
        self.stage, self.total = stage, total
        self.started = time.perf_counter()
        self._bar = None
        if sys.stderr.isatty():
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(transient=False)
            self._bar.start()
            self._task = self._bar.add_task(f"{stage}: {description}", total=total)
        else:
            log(stage, f"{description} ...")

    def advance(self, message: str, amount: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=amount)
        else:
            log(self.stage, message)

    def close(self) -> float:
        if self._bar is not None:
            self._bar.stop()
        return time.perf_counter() - self.started


def log(stage: str, message: str) -> None:
    print(f"[{stage}] {message}", file=sys.stderr, flush=True)
