"""The report's documents: Markdown with PNGs beside it, and one self-contained HTML page (PNGs inlined as
base64 data URIs), both written into the compare folder."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mbrl_core.atomic import save_text
from workflows.report.plots import file_name, plot_aggregate, plot_dataset, plot_penalties, plot_profiles
from workflows.report.summary import ReportData, summarize
from workflows.report.tables import (
    ENTROPY_NOTE,
    PENALTY_NOTE,
    Table,
    aggregate_table,
    count,
    dynamics_notes,
    dynamics_table,
    entropy_table,
    html_table,
    markdown_table,
    pairs_table,
    penalty_table,
    results_table,
    verdict_notes,
    verdict_table,
)
from workflows.report.verdict import BOOTSTRAP_SEED, MIN_SEEDS

MARKDOWN_NAME = "report.md"
HTML_NAME = "report.html"
PLOTS_DIR = "plots"
AGGREGATE_PLOT = "aggregate"
PROFILES_PLOT = "performance-profiles"


@dataclass(frozen=True)
class ReportPaths:
    markdown: Path
    html: Path
    plots: tuple[Path, ...]


@dataclass(frozen=True)
class Section:
    table: Table
    notes: tuple[str, ...] = ()
    plots: tuple[tuple[str, str], ...] = ()  # (plot name, what it shows) of the figures after the table


def header_lines(data: ReportData) -> list[str]:
    runs = [run for cell in data.cells for run in cell.runs]
    budgets = sorted({run.steps for run in runs})
    episodes = sorted({run.eval_episodes for run in runs})
    lines = [
        f"{count(len(runs), 'finished run')}: {count(len({c.algo for c in data.cells}), 'learner')} x "
        f"{count(len(data.datasets), 'dataset')}, "
        f"budget {' / '.join(f'{steps:,}' for steps in budgets)} gradient steps, final evaluation "
        f"over {' / '.join(map(str, episodes))} episodes.",
        "Final = the policy after the last step (the headline). Best during training = the best periodic "
        "evaluation; choosing it peeks at the environment, so it is optimistic. Std is over seeds (n-1); IQM is "
        "the mean of the middle 50% of runs. Every 95% CI is a percentile bootstrap over runs, expanded for "
        f"small samples (bootstrap seed {BOOTSTRAP_SEED}, so a rebuilt report shows the same numbers), and is "
        f"shown only from {MIN_SEEDS} seeds per learner. Model-based wall-clock and updates/s include the dynamics "
        "model's pretraining.",
    ]
    if len(budgets) > 1:
        lines.append(f"WARNING: runs used different budgets ({budgets}); rows are not directly comparable.")
    if data.unfinished:
        lines.append(f"Not finished (left out): {', '.join(data.unfinished)}.")
    return [*data.warnings, *lines]


def sections(data: ReportData) -> list[Section]:
    """The report's sections in document order; each is headed by its table's title."""
    result = [Section(verdict_table(data), notes=tuple(verdict_notes(data)))]
    if data.pairs:
        result.append(Section(pairs_table(data)))
    for dataset_id in data.datasets:
        result.append(Section(results_table(data, dataset_id), plots=((dataset_id, "learning curves and finals"),)))
    figures: tuple[tuple[str, str], ...]
    if data.aggregate:
        figures = ((AGGREGATE_PLOT, "IQM and optimality gap"), (PROFILES_PLOT, "performance profiles"))
        result.append(Section(aggregate_table(data), plots=figures))
    penalties = penalty_table(data)
    if penalties.rows:
        figures = tuple(
            (penalty_plot(dataset_id), "penalty vs model reward")
            for dataset_id in data.datasets
            if any(run.penalty for cell in data.cells_of(dataset_id) for run in cell.runs)
        )
        result.append(Section(penalties, notes=(PENALTY_NOTE,), plots=figures))
    entropies = entropy_table(data)
    if entropies.rows:
        result.append(Section(entropies, notes=(ENTROPY_NOTE,)))
    if data.dynamics:
        result.append(Section(dynamics_table(data), notes=tuple(dynamics_notes(data))))
    return result


def penalty_plot(dataset_id: str) -> str:
    return f"{dataset_id}-penalty"


def draw_plots(data: ReportData, folder: Path) -> dict[str, Path]:
    plots: dict[str, Path] = {}
    for dataset_id in data.datasets:
        plots[dataset_id] = plot_dataset(data, dataset_id, folder / file_name(dataset_id))
        penalty = plot_penalties(data, dataset_id, folder / file_name(penalty_plot(dataset_id)))
        if penalty is not None:
            plots[penalty_plot(dataset_id)] = penalty
    if data.aggregate:
        plots[AGGREGATE_PLOT] = plot_aggregate(data, folder / file_name(AGGREGATE_PLOT))
        plots[PROFILES_PLOT] = plot_profiles(data, folder / file_name(PROFILES_PLOT))
    return plots


def render_markdown(data: ReportData) -> str:
    parts = [f"# Offline RL comparison: {data.title}", *header_lines(data)]
    for section in sections(data):
        parts += [f"## {section.table.title}", markdown_table(section.table), *section.notes]
        parts += [f"![{name}: {what}]({PLOTS_DIR}/{file_name(name)})" for name, what in section.plots]
    return "\n\n".join(parts) + "\n"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
td { white-space: nowrap; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #ddd; margin-bottom: 1em; }
p.note { color: #555; font-size: 0.9em; white-space: pre-wrap; }
"""


def render_html(data: ReportData, plots: dict[str, Path]) -> str:
    title = html.escape(f"Offline RL comparison: {data.title}")
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{STYLE}</style></head><body>",
        f"<h1>{title}</h1>",
    ]
    parts += [f"<p class='note'>{html.escape(line)}</p>" for line in header_lines(data)]
    for section in sections(data):
        parts += [f"<h2>{html.escape(section.table.title)}</h2>", html_table(section.table)]
        parts += [f"<p class='note'>{html.escape(note)}</p>" for note in section.notes]
        parts += [inline_image(plots[name], f"{name}: {what}") for name, what in section.plots]
    parts.append("</body></html>")
    return "\n".join(parts)


def inline_image(path: Path, alt: str) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{encoded}'>"


def write_report(
    folder: Path,
    title: str | None = None,
    algo_order: Sequence[str] = (),
    dynamics_store: str | None = None,
    grid: dict[str, Any] | None = None,
) -> tuple[ReportData, ReportPaths]:
    """Summarize the finished runs under ``folder`` and write report.md, report.html and plots/*.png into it.

    ``grid``: the compare's ``compare.json`` record, if any (see :func:`summarize`).
    """
    folder = Path(folder)
    data = summarize(folder, title=title, algo_order=algo_order, dynamics_store=dynamics_store, grid=grid)
    plots = draw_plots(data, folder / PLOTS_DIR)
    save_text(render_markdown(data), folder / MARKDOWN_NAME)
    save_text(render_html(data, plots), folder / HTML_NAME)
    return data, ReportPaths(folder / MARKDOWN_NAME, folder / HTML_NAME, tuple(plots.values()))
