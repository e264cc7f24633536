"""Progress bars that suit a terminal, a notebook and a log file alike.

On a terminal (or in a notebook) a bar redraws in place as usual. Written to a
file or a pipe (``mbrl collect ... > collect.log``), tqdm's in-place redraws
would pile up as one endless line of carriage returns, ten a second for hours;
there each redraw becomes one plain line instead, at most one a minute, so a log
of a long collection or training reads top to bottom.
"""

from __future__ import annotations

import sys
from typing import IO, Any, TypeAlias

from tqdm import autonotebook, std
from tqdm.auto import tqdm as auto_tqdm

ProgressBar: TypeAlias = std.tqdm
LOG_LINE_SECONDS = 60.0  # at most one progress line a minute in a log file (the grid display's cadence too)
LOG_LINE_WIDTH = 100


class _OneLinePerDraw:
    """A text stream for tqdm that turns each in-place redraw (``\\r`` + text) into a line of its own."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").rstrip("\n")
        if line.strip():
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def is_interactive(stream: IO[str]) -> bool:
    """A terminal (redraw in place), not a file or a pipe (write whole lines)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(*, file: IO[str] | None = None, **options: Any) -> ProgressBar:
    """A tqdm bar (same keywords) on ``file`` (default: stderr): in place on a terminal or in a notebook,
    one line at most every :data:`LOG_LINE_SECONDS` otherwise."""
    stream = file if file is not None else sys.stderr
    in_notebook = autonotebook.tqdm is not std.tqdm  # tqdm.autonotebook picked its notebook widget
    if in_notebook or is_interactive(stream):
        return auto_tqdm(file=stream, **options)
    options.pop("dynamic_ncols", None)
    return std.tqdm(
        file=_OneLinePerDraw(stream),
        mininterval=LOG_LINE_SECONDS,
        maxinterval=LOG_LINE_SECONDS,
        ncols=LOG_LINE_WIDTH,
        ascii=True,
        **options,
    )
