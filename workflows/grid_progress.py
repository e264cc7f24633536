"""Live progress of a compare grid: which runs train, their update and latest score, the time left.

Runs train in worker processes (or inline), so the display reads what they
leave behind: each run's ``metrics.csv`` (a row every ``log_every`` updates and
at each evaluation) and, for dynamics pretraining, the epochs a Lightning
callback sends over a multiprocessing queue. A thread refreshes it once a
second on a terminal (one overall bar and a line per task in flight, drawn by
tqdm on stderr) and prints one summary line every ``line_every`` seconds
otherwise (logs, CI).
"""

from __future__ import annotations

import csv
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import lightning.pytorch as L
from tqdm import tqdm

from mbrl_core.progress import LOG_LINE_SECONDS, is_interactive

EPOCH_EVENT = "epoch"
STARTED_EVENT = "started"  # from executors that queue tasks themselves (Ray): the task has begun
SCORE_COLUMNS = ("eval/normalized_score", "eval/return_mean")


@dataclass
class RunProgress:
    """One run of the grid as last seen in its folder."""

    name: str
    algo: str
    total: int
    metrics: Path
    step: int = 0
    score: float | None = None
    score_label: str = "score"
    state: str = "queued"  # queued | training | done | failed
    started: float | None = None
    first_step: int = 0  # the step it resumed from: updates made before this session do not count for speed
    ended: float | None = None
    seen_mtime: float = 0.0

    def update_from_metrics(self) -> None:
        """Re-read ``metrics.csv`` when it changed; a half-written file keeps what was read before."""
        try:
            mtime = self.metrics.stat().st_mtime
            if mtime == self.seen_mtime:
                return
            rows = list(csv.DictReader(self.metrics.read_text().splitlines()))
        except (OSError, csv.Error):
            return
        self.seen_mtime = mtime
        steps = [int(float(row["step"])) for row in rows if row.get("step")]
        if steps:
            self.step = max(steps)
            # a resumed run first trims rows logged after its checkpoint: count its speed from there
            self.first_step = min(self.first_step, self.step)
        for column, label in zip(SCORE_COLUMNS, ("score", "return")):
            values = [row[column] for row in rows if row.get(column)]
            if values:
                self.score, self.score_label = float(values[-1]), label
                return

    def seconds_per_update(self, now: float) -> float | None:
        """Wall-clock seconds per update this session (evaluations and start-up included)."""
        if self.started is None:
            return None
        made = self.step - self.first_step
        return ((self.ended or now) - self.started) / made if made > 0 else None


@dataclass
class StageProgress:
    """A dynamics model being pretrained (or found in the store)."""

    name: str
    state: str = "queued"
    epoch: int = 0
    max_epochs: int | None = None
    holdout_mse: float | None = None
    started: float | None = None


class EpochReporter(L.Callback):
    """Sends each finished dynamics epoch (and its holdout MSE, when logged) to the grid display."""

    def __init__(self, events: Any, task_name: str) -> None:
        self.events = events
        self.task_name = task_name

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        mse = next(
            (float(value) for key, value in trainer.callback_metrics.items() if "holdout" in key and "mse" in key),
            None,
        )
        self.events.put((self.task_name, EPOCH_EVENT, trainer.current_epoch + 1, trainer.max_epochs, mse))


@dataclass
class GridProgress:
    """The display of one grid. ``log`` prints a message line (above the live lines on a terminal)."""

    capacity: int
    log: Callable[[str], None] | None = None
    events: Any = None  # a multiprocessing queue the workers' EpochReporters write to
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    enabled: bool = True
    line_every: float = LOG_LINE_SECONDS
    runs: dict[str, RunProgress] = field(default_factory=dict)
    stages: dict[str, StageProgress] = field(default_factory=dict)
    done_before: int = 0  # runs finished in earlier sessions

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.stop = threading.Event()
        self.terminal = self.enabled and is_interactive(self.stream)
        self.bars: list[tqdm] = []
        self.thread: threading.Thread | None = None
        self.began = time.monotonic()

    # -- what the schedule tells it
    def add_run(self, name: str, algo: str, total: int, folder: Path) -> None:
        self.runs[name] = RunProgress(name, algo, total, folder / "metrics.csv")

    def total_updates(self) -> int:
        return sum(run.total for run in self.runs.values())

    def add_stage(self, name: str) -> None:
        self.stages[name] = StageProgress(name)

    def started(self, name: str) -> None:
        with self.lock:
            task = self.runs.get(name) or self.stages[name]
            task.state, task.started = "training", time.monotonic()
            if isinstance(task, RunProgress):
                task.update_from_metrics()  # a resumed run starts from its checkpoint's step
                task.first_step = task.step

    def finished(self, name: str, failed: bool = False, score: float | None = None) -> None:
        with self.lock:
            task = self.runs.get(name) or self.stages[name]
            task.state = "failed" if failed else "done"
            if isinstance(task, RunProgress):
                task.ended = time.monotonic()
                if not failed:
                    task.step = task.total
                    task.score = score if score is not None else task.score

    def message(self, text: str) -> None:
        if self.log is not None:
            self.log(text)
        elif self.terminal:
            tqdm.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    # -- the refreshing display
    def __enter__(self) -> GridProgress:
        if self.enabled:
            if self.terminal:
                self.bars = [self.new_bar(0, total=self.total_updates())]
            self.thread = threading.Thread(target=self.loop, name="grid-progress", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        with self.lock:
            for bar in reversed(self.bars):
                bar.close()
            self.bars = []

    def loop(self) -> None:
        next_line = time.monotonic() + min(self.line_every, 15.0)  # the first line early, then a modest cadence
        while not self.stop.wait(1.0):
            with self.lock:
                self.poll()
                if self.terminal:
                    self.draw()
                elif time.monotonic() >= next_line:
                    print(f"progress: {self.summary_line()}", file=self.stream, flush=True)
                    next_line = time.monotonic() + self.line_every

    def poll(self) -> None:
        for run in self.runs.values():
            if run.state == "training":
                run.update_from_metrics()
        while self.events is not None:
            try:
                name, kind, epoch, max_epochs, mse = self.events.get_nowait()
            except (queue.Empty, OSError, EOFError, ValueError):
                break
            task = self.runs.get(name) or self.stages.get(name)
            if kind == STARTED_EVENT and task is not None and task.state == "queued":  # not one that already ended
                self.started(name)
            elif kind == EPOCH_EVENT and name in self.stages:
                stage = self.stages[name]
                stage.epoch, stage.max_epochs, stage.holdout_mse = epoch, max_epochs, mse

    def new_bar(self, position: int, total: int | None = None) -> tqdm:
        if total is not None:
            return tqdm(
                total=total,
                position=position,
                file=self.stream,
                unit="upd",
                dynamic_ncols=True,
                leave=False,
                bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} updates{postfix}",
            )
        return tqdm(position=position, file=self.stream, dynamic_ncols=True, leave=False, bar_format="{desc}")

    def draw(self) -> None:
        overall, *slots = self.bars
        overall.n = sum(run.step for run in self.runs.values())
        overall.set_description_str(self.runs_done_text(), refresh=False)
        overall.set_postfix_str(self.time_text(), refresh=False)
        lines = self.active_lines()
        while len(slots) < len(lines):
            slots.append(self.new_bar(len(slots) + 1))
        for bar, text in zip(slots, lines + [""] * (len(slots) - len(lines))):
            bar.set_description_str(text, refresh=False)
        self.bars = [overall, *slots]
        for bar in self.bars:
            bar.refresh()

    # -- the texts
    def runs_done_text(self) -> str:
        done = sum(run.state == "done" for run in self.runs.values()) + self.done_before
        return f"[{done}/{len(self.runs) + self.done_before} runs]"

    def active_lines(self) -> list[str]:
        now = time.monotonic()
        lines = [self.stage_text(stage, now) for stage in self.stages.values() if stage.state == "training"]
        lines += [self.run_text(run, now) for run in self.runs.values() if run.state == "training"]
        return lines

    def stage_text(self, stage: StageProgress, now: float) -> str:
        text = f"  {stage.name}: "
        text += f"epoch {stage.epoch}" if stage.epoch else "starting"
        if stage.holdout_mse is not None:
            text += f", holdout MSE {stage.holdout_mse:.3g}"
        if stage.max_epochs:
            text += f" (stops early, at most {stage.max_epochs})"
        return text + f", {clock(now - (stage.started or now))}"

    def run_text(self, run: RunProgress, now: float) -> str:
        text = f"  {run.name}: {run.step:,}/{run.total:,}"
        if run.score is not None:
            text += f", {run.score_label} {run.score:.1f}"
        left = self.run_seconds_left(run, now)
        text += f", {clock(now - (run.started or now))}" + (f", ~{clock(left)} left" if left is not None else "")
        return text

    def time_text(self) -> str:
        left = self.grid_seconds_left(time.monotonic())
        waiting = [stage for stage in self.stages.values() if stage.state in ("queued", "training")]
        text = f"elapsed {clock(time.monotonic() - self.began)}"
        if left is None:
            return text + ", estimating the time left"
        return text + f", ~{clock(left)} left" + (" after the dynamics models" if waiting else "")

    def summary_line(self) -> str:
        parts = [f"{self.runs_done_text()} {self.time_text()}"]
        parts += [line.strip() for line in self.active_lines()]
        return "; ".join(parts)

    # -- the estimate
    def speed(self, algo: str, now: float) -> float | None:
        """Seconds per update of ``algo`` in this session; the mean over all algorithms if none ran yet."""
        seen = [run for run in self.runs.values() if run.seconds_per_update(now) is not None]
        same = [run for run in seen if run.algo == algo] or seen
        if not same:
            return None
        seconds = sum(((run.ended or now) - (run.started or now)) for run in same)
        return seconds / sum(run.step - run.first_step for run in same)

    def run_seconds_left(self, run: RunProgress, now: float) -> float | None:
        speed = self.speed(run.algo, now)
        return None if speed is None else max(run.total - run.step, 0) * speed

    def grid_seconds_left(self, now: float) -> float | None:
        """The unfinished runs' work spread over the workers, but never less than the longest running one."""
        unfinished = [run for run in self.runs.values() if run.state in ("queued", "training")]
        if not unfinished:
            return 0.0
        lefts = [self.run_seconds_left(run, now) for run in unfinished]
        if any(left is None for left in lefts):
            return None
        running = [left for run, left in zip(unfinished, lefts) if run.state == "training" and left is not None]
        return max(sum(left for left in lefts if left is not None) / self.capacity, max(running, default=0.0))


def clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
