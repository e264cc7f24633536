"""Progress bars: in place on a terminal, one plain line a minute in a log file."""

from __future__ import annotations

import io

from mbrl_core.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_bar(stream: io.StringIO, updates: int) -> str:
    bar = progress_bar(file=stream, total=updates, desc="SAC", unit="step", dynamic_ncols=True)
    for _ in range(updates):
        bar.update(1)
    bar.set_postfix(eval_return="12.5")
    bar.close()
    return stream.getvalue()


def test_a_log_file_gets_whole_lines_not_carriage_returns() -> None:
    log = run_bar(io.StringIO(), 50_000)
    lines = log.splitlines()
    assert "\r" not in log
    assert log.endswith("\n")
    # the first draw, then only the final state (50,000 updates take far less than a minute)
    assert len(lines) <= 3, lines
    assert lines[0].startswith("SAC:   0%")
    assert "50000/50000" in lines[-1] and "eval_return=12.5" in lines[-1]


def test_a_terminal_gets_a_bar_redrawn_in_place() -> None:
    screen = run_bar(Terminal(), 2_000)
    assert "\r" in screen
    assert "2000/2000" in screen
