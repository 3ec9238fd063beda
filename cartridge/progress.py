"""Progress bars for the command line: rich, else tqdm, else nothing.

    from .progress import bar
    with bar("put", total=nbytes, quiet=args.quiet) as b:    # unit "B" (bytes) by default
        for chunk in chunks:
            ...
            b.update(len(chunk))

A bar is drawn on standard error only when it is a terminal and neither `--quiet` nor
CARTRIDGE_PROGRESS=0 turns it off (CARTRIDGE_PROGRESS=1 forces it on, for a pipe or a test).
The drawing library is imported on first use, never by `import cartridge`: rich if it is
installed, else tqdm, else none, and a disabled or library-less bar is a no-op object with the
same methods, so a command calls update() without asking whether anything is shown. Install
one with the `cli` extra (`pip install "cartridge[cli]"`). The bar is transient: it disappears
when it closes, so the command's own summary line is all that stays on the screen.
"""
from __future__ import annotations

import os
import sys
from typing import IO, Any

from .terminal import safe

ENV = "CARTRIDGE_PROGRESS"        # "0": never draw, "1": draw even when not a terminal
BACKENDS = ("rich", "tqdm")


def enabled(quiet: bool = False, stream: IO[str] | None = None) -> bool:
    """Whether a bar would be drawn on `stream` (default: standard error)."""
    if quiet:
        return False
    env = os.environ.get(ENV, "").strip()
    if env == "0":
        return False
    if env == "1":
        return True
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):      # no isatty, or a closed stream
        return False


def backend() -> str | None:
    """The drawing library that would be used: "rich", "tqdm" or None (none installed)."""
    import importlib.util

    for name in BACKENDS:
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except (ImportError, ValueError):                # a module set to None in sys.modules
            continue
    return None


class Bar:
    """A progress bar that draws nothing: the interface every bar has."""

    shown = False

    def update(self, n: int = 1) -> None:
        """Advance by `n` units (bytes, files...)."""

    def set_total(self, total: int | None) -> None:
        """Change the total (None: unknown, a spinner-like bar)."""

    def finish(self) -> None:
        """The work is done: the bar shows 100%, its total becoming what was counted (the
        total given was only an estimate: compaction's reclaimable bytes; 0 when nothing
        was)."""

    def close(self) -> None:
        """Stop drawing; the bar disappears. Idempotent."""

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _RichBar(Bar):
    shown = True

    def __init__(self, desc: str, total: int | None, unit: str, stream: IO[str]):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.text import Text

        class Percent(TaskProgressColumn):
            """The percentage; 100% once finished (also when the work turned out to be none:
            a total of 0, which rich would show as 0%)."""

            def render(self, task: Any) -> Any:
                if task.finished and task.total == 0:
                    return Text("100%", style="progress.percentage")
                return super().render(task)

        columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), Percent()]
        if unit == "B":
            columns += [DownloadColumn(binary_units=True), TransferSpeedColumn()]
        else:
            columns += [MofNCompleteColumn(), TextColumn(unit)]
        columns.append(TimeRemainingColumn())
        console = Console(file=stream, force_terminal=os.environ.get(ENV) == "1" or None,
                          highlight=False)
        self._progress = Progress(*columns, console=console, transient=True)
        self._progress.start()
        self._task = self._progress.add_task(desc, total=total)
        self._closed = False

    def update(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def set_total(self, total: int | None) -> None:
        self._progress.update(self._task, total=total)

    def finish(self) -> None:
        task = self._progress.tasks[0]
        if task.total is None or task.completed != task.total:
            self._progress.update(self._task, total=task.completed)
            self._progress.refresh()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._progress.stop()


class _TqdmBar(Bar):
    shown = True

    def __init__(self, desc: str, total: int | None, unit: str, stream: IO[str]):
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B",
                         unit_divisor=1024, file=stream, leave=False, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def set_total(self, total: int | None) -> None:
        self._bar.total = total
        self._bar.refresh()

    def finish(self) -> None:
        if self._bar.total != self._bar.n:
            self.set_total(self._bar.n)

    def close(self) -> None:
        self._bar.close()


def bar(desc: str, total: int | None = None, *, unit: str = "B", quiet: bool = False,
        stream: IO[str] | None = None) -> Bar:
    """A progress bar for `total` units (None: unknown) labelled `desc`, drawn on `stream`
    (default: standard error) when enabled(quiet, stream); otherwise, or when neither rich nor
    tqdm is installed, a Bar that draws nothing. unit: "B" shows bytes (KiB, MiB/s...), any
    other word a count ("files")."""
    stream = sys.stderr if stream is None else stream
    if not enabled(quiet, stream):
        return Bar()
    name = backend()
    desc = safe(desc)
    try:
        if name == "rich":
            return _RichBar(desc, total, unit, stream)
        if name == "tqdm":
            return _TqdmBar(desc, total, unit, stream)
    except ImportError:       # found but broken: draw nothing rather than fail the command
        pass
    return Bar()
