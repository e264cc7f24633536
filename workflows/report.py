"""The comparison report, rebuilt at any time from the finished runs' ``eval.json`` files.

For each dataset and learner: the final normalized score (mean ± std over
seeds, the headline), its IQM with a stratified-bootstrap 95% CI (rliable),
the best score seen during training (labelled as such: picking the best
checkpoint peeks at the evaluation env, so it is optimistic), learning curves,
wall-clock and end-to-end updates/s (model-based rows pay for their dynamics
model's pretraining), the best model-based vs best model-free learner per
dataset, and the dynamics models used. Written as Markdown with PNGs beside it
and as one self-contained HTML page (PNGs inlined as base64 data URIs).
"""

from __future__ import annotations

import base64
import html
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from dynamics.service import DynamicsService
from mbrl_core.atomic import save_text
from mbrl_core.errors import ArtifactError, MbrlError
from workflows.runs import is_finished, read_eval
from workflows.stats import Estimate, stratified_bootstrap_ci

BOOTSTRAP_SEED = 0
MARKDOWN_NAME = "report.md"
HTML_NAME = "report.html"
PLOTS_DIR = "plots"


@dataclass(frozen=True)
class RunRecord:
    """What the report needs from one finished run."""

    name: str
    algo: str
    dataset_id: str
    seed: int
    steps: int
    model_based: bool
    normalized: bool  # scores are normalized scores (else raw returns: the dataset has no refs)
    final_score: float
    best_score: float
    history: tuple[tuple[int, float], ...]
    train_seconds: float
    eval_episodes: int
    dynamics_key: str | None
    dynamics_seconds: float  # what pretraining this run's dynamics model cost; 0 for model-free runs

    @property
    def wall_seconds(self) -> float:
        return self.train_seconds + self.dynamics_seconds

    @property
    def updates_per_second(self) -> float:
        return self.steps / self.wall_seconds if self.wall_seconds > 0 else math.nan


@dataclass(frozen=True)
class CellSummary:
    """One learner on one dataset, over its seeds."""

    dataset_id: str
    algo: str
    model_based: bool
    runs: tuple[RunRecord, ...]
    final_mean: float
    final_std: float
    final_iqm: Estimate
    best_mean: float
    best_std: float
    wall_seconds: float
    updates_per_second: float

    @property
    def family(self) -> str:
        return "model-based" if self.model_based else "model-free"


@dataclass(frozen=True)
class DynamicsSummary:
    key: str
    dataset_ids: tuple[str, ...]
    runs: int
    train_seconds: float
    metrics: dict[str, Any] | None  # None when the artifact could not be loaded


@dataclass
class ReportData:
    title: str
    datasets: list[str]
    normalized: dict[str, bool]
    cells: list[CellSummary]
    aggregate: list[tuple[str, int, Estimate]] = field(default_factory=list)
    dynamics: list[DynamicsSummary] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)

    def cells_of(self, dataset_id: str) -> list[CellSummary]:
        return [cell for cell in self.cells if cell.dataset_id == dataset_id]


@dataclass(frozen=True)
class ReportPaths:
    markdown: Path
    html: Path
    plots: tuple[Path, ...]


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


# ---------------------------------------------------------------- collecting runs


def run_folders(folder: Path) -> list[Path]:
    """Run folders of a compare (``<folder>/runs/*``) or of a plain runs directory (``<folder>/*``)."""
    parent = folder / "runs" if (folder / "runs").is_dir() else folder
    return sorted(
        path
        for path in parent.iterdir()
        if path.is_dir() and ((path / "config.yaml").exists() or (path / "eval.json").exists())
    )


def score_of(evaluation: dict[str, Any]) -> float:
    """The normalized score, or the raw mean return when the dataset has no reference scores."""
    score = evaluation.get("normalized_score")
    return float(evaluation["return_mean"] if score is None else score)


def load_dynamics(key: str, store: str | None) -> Any | None:
    """The dynamics artifact behind ``key``, or None if the artifact is unavailable."""
    try:
        return DynamicsService.load(key, store=store, device="cpu")
    except (MbrlError, OSError):
        return None


def dynamics_costs(
    evaluations: Iterable[dict[str, Any]], store: str | None
) -> dict[str, tuple[float, dict[str, Any] | None]]:
    """Per dynamics key: (training seconds, artifact metrics or None).

    The artifact's own ``train_seconds`` is the true cost even when every run
    reused the model; without the artifact, fall back to the longest
    ``pretrain_seconds`` a run recorded (the run that trained it).
    """
    recorded: dict[str, float] = defaultdict(float)
    for evaluation in evaluations:
        dynamics = evaluation.get("dynamics")
        if dynamics:
            recorded[dynamics["key"]] = max(recorded[dynamics["key"]], float(dynamics.get("pretrain_seconds") or 0.0))
    costs = {}
    for key, fallback in recorded.items():
        service = load_dynamics(key, store)
        # Training facts live in .metrics, holdout error and calibration (elite means) in .quality.
        metrics = {**service.metrics, **service.quality.get("elite_mean", {})} if service is not None else None
        seconds = float(metrics["train_seconds"]) if metrics and "train_seconds" in metrics else fallback
        costs[key] = (seconds, metrics)
    return costs


def run_record(run_dir: Path, evaluation: dict[str, Any], dynamics_seconds: dict[str, float]) -> RunRecord:
    dynamics_key = (evaluation.get("dynamics") or {}).get("key")
    return RunRecord(
        name=run_dir.name,
        algo=evaluation["algo"],
        dataset_id=evaluation["dataset_id"],
        seed=int(evaluation["seed"]),
        steps=int(evaluation["steps"]),
        model_based=bool(evaluation["model_based"]),
        normalized=evaluation["final"].get("normalized_score") is not None,
        final_score=score_of(evaluation["final"]),
        best_score=score_of(evaluation["best"]),
        history=tuple((int(point["step"]), score_of(point)) for point in evaluation["history"]),
        train_seconds=float(evaluation["train_seconds"]),
        eval_episodes=int(evaluation["final"]["episodes"]),
        dynamics_key=dynamics_key,
        dynamics_seconds=dynamics_seconds.get(dynamics_key, 0.0) if dynamics_key else 0.0,
    )


# ---------------------------------------------------------------- statistics


def sample_std(values: Sequence[float]) -> float:
    """Standard deviation over seeds (n - 1 in the denominator); NaN for one seed."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def summarize_cell(runs: Sequence[RunRecord]) -> CellSummary:
    finals = [run.final_score for run in runs]
    bests = [run.best_score for run in runs]
    return CellSummary(
        dataset_id=runs[0].dataset_id,
        algo=runs[0].algo,
        model_based=runs[0].model_based,
        runs=tuple(sorted(runs, key=lambda run: run.seed)),
        final_mean=float(np.mean(finals)),
        final_std=sample_std(finals),
        final_iqm=stratified_bootstrap_ci(finals, seed=BOOTSTRAP_SEED),
        best_mean=float(np.mean(bests)),
        best_std=sample_std(bests),
        wall_seconds=float(np.mean([run.wall_seconds for run in runs])),
        updates_per_second=float(np.mean([run.updates_per_second for run in runs])),
    )


def aggregate_over_datasets(cells: Sequence[CellSummary], datasets: Sequence[str]) -> list[tuple[str, int, Estimate]]:
    """Per learner run on every dataset: IQM of all its runs' normalized final scores.

    The bootstrap is stratified by dataset.
    """
    by_algo: dict[str, list[CellSummary]] = defaultdict(list)
    for cell in cells:
        by_algo[cell.algo].append(cell)
    aggregate = []
    for algo, algo_cells in by_algo.items():
        if {cell.dataset_id for cell in algo_cells} != set(datasets):
            continue
        runs = [run for cell in algo_cells for run in cell.runs]
        estimate = stratified_bootstrap_ci(
            [run.final_score for run in runs], strata=[run.dataset_id for run in runs], seed=BOOTSTRAP_SEED
        )
        aggregate.append((algo, len(runs), estimate))
    return aggregate


def best_of_family(cells: Sequence[CellSummary], model_based: bool) -> CellSummary | None:
    family = [cell for cell in cells if cell.model_based == model_based]
    return max(family, key=lambda cell: cell.final_mean, default=None)


def summarize_dynamics(
    costs: dict[str, tuple[float, dict[str, Any] | None]], records: Sequence[RunRecord]
) -> list[DynamicsSummary]:
    summaries = []
    for key, (seconds, metrics) in costs.items():
        users = [record for record in records if record.dynamics_key == key]
        summaries.append(
            DynamicsSummary(key, tuple(sorted({record.dataset_id for record in users})), len(users), seconds, metrics)
        )
    return summaries


def cell_order(datasets: Sequence[str], algo_order: Sequence[str]) -> Callable[[CellSummary], tuple]:
    """Datasets in order; within one, the compare's learner order, else model-based first, then by name."""
    rank = {algo: index for index, algo in enumerate(algo_order)}

    def key(cell: CellSummary) -> tuple:
        return (datasets.index(cell.dataset_id), rank.get(cell.algo, len(rank)), not cell.model_based, cell.algo)

    return key


def summarize(
    folder: Path, title: str | None = None, algo_order: Sequence[str] = (), dynamics_store: str | None = None
) -> ReportData:
    """Read every finished run under ``folder`` and compute the report's numbers."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"no such compare folder: {folder}")
    finished, unfinished = [], []
    for run_dir in run_folders(folder):
        (finished if is_finished(run_dir) else unfinished).append(run_dir)
    if not finished:
        raise ArtifactError(f"no finished runs under {folder} (a run is finished once its eval.json is written)")
    evaluations = {run_dir: read_eval(run_dir) for run_dir in finished}
    costs = dynamics_costs(evaluations.values(), dynamics_store)
    records = [
        run_record(run_dir, evaluation, {key: cost[0] for key, cost in costs.items()})
        for run_dir, evaluation in evaluations.items()
    ]

    grouped: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for record in records:
        grouped[(record.dataset_id, record.algo)].append(record)
    datasets = sorted({record.dataset_id for record in records})
    cells = sorted((summarize_cell(runs) for runs in grouped.values()), key=cell_order(datasets, algo_order))
    normalized = {
        dataset: all(record.normalized for record in records if record.dataset_id == dataset) for dataset in datasets
    }

    normalized_datasets = [dataset for dataset in datasets if normalized[dataset]]
    aggregate = (
        aggregate_over_datasets([c for c in cells if normalized[c.dataset_id]], normalized_datasets)
        if len(normalized_datasets) > 1
        else []
    )
    return ReportData(
        title=title or folder.resolve().name,
        datasets=datasets,
        normalized=normalized,
        cells=cells,
        aggregate=aggregate,
        dynamics=summarize_dynamics(costs, records),
        unfinished=[run_dir.name for run_dir in unfinished],
    )


# ---------------------------------------------------------------- tables


def fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def mean_std(mean: float, std: float) -> str:
    return fmt(mean) if math.isnan(std) else f"{fmt(mean)} ± {fmt(std)}"


def interval(estimate: Estimate) -> str:
    return f"{fmt(estimate.value)} [{fmt(estimate.low)}, {fmt(estimate.high)}]"


def score_unit(data: ReportData, dataset_id: str) -> str:
    return "normalized score" if data.normalized[dataset_id] else "raw return (no reference scores)"


def results_table(data: ReportData, dataset_id: str) -> Table:
    unit = score_unit(data, dataset_id)
    rows = tuple(
        (
            cell.algo,
            cell.family,
            str(len(cell.runs)),
            mean_std(cell.final_mean, cell.final_std),
            interval(cell.final_iqm),
            mean_std(cell.best_mean, cell.best_std),
            fmt(cell.wall_seconds, 0),
            fmt(cell.updates_per_second, 0),
        )
        for cell in data.cells_of(dataset_id)
    )
    headers = (
        "learner",
        "family",
        "seeds",
        f"final {unit}: mean ± std",
        "final IQM [95% CI]",
        "best during training: mean ± std",
        "wall-clock s",
        "updates/s",
    )
    return Table(f"Results: {dataset_id} ({unit})", headers, rows)


def family_table(data: ReportData) -> Table:
    rows = []
    for dataset_id in data.datasets:
        cells = data.cells_of(dataset_id)
        model_based, model_free = best_of_family(cells, True), best_of_family(cells, False)
        gap = f"{model_based.final_mean - model_free.final_mean:+.1f}" if model_based and model_free else "n/a"
        rows.append(
            (dataset_id, best_label(model_based), best_label(model_free), gap, verdict(model_based, model_free))
        )
    headers = ("dataset", "best model-based (final mean)", "best model-free (final mean)", "gap (MB - MF)", "verdict")
    return Table("Model-based vs model-free (final scores)", headers, tuple(rows))


def best_label(cell: CellSummary | None) -> str:
    return f"{cell.algo} {fmt(cell.final_mean)}" if cell else "none run"


def verdict(model_based: CellSummary | None, model_free: CellSummary | None) -> str:
    """Which family wins, and whether the IQM intervals separate the two at 95%."""
    if model_based is None or model_free is None:
        return "only one family was run"
    if model_based.final_mean == model_free.final_mean:
        return "tied"
    winner, loser = (
        (model_based, model_free) if model_based.final_mean >= model_free.final_mean else (model_free, model_based)
    )
    separated = winner.final_iqm.low > loser.final_iqm.high
    strength = "CIs do not overlap" if separated else "CIs overlap: not separable with these seeds"
    return f"{winner.family} ahead ({strength})"


def aggregate_table(data: ReportData) -> Table:
    rows = tuple((algo, str(count), interval(estimate)) for algo, count, estimate in data.aggregate)
    return Table(
        "Across datasets (normalized final scores, bootstrap stratified by dataset)",
        ("learner", "runs", "IQM [95% CI]"),
        rows,
    )


# (column header, metric name in the artifact): a calibrated Gaussian puts 68.3% / 95.4% of targets within 1 / 2 sigma.
DYNAMICS_COLUMNS = (
    ("holdout MSE", "holdout_mse"),
    ("holdout NLL", "holdout_nll"),
    ("within 1σ (ideal 0.683)", "within_1_sigma"),
    ("within 2σ (ideal 0.954)", "within_2_sigma"),
    ("open-loop MSE h=10", "open_loop_mse_h10"),
    ("epochs", "epochs"),
)


def dynamics_table(data: ReportData) -> Table:
    rows = []
    for summary in data.dynamics:
        metrics = summary.metrics or {}
        values = tuple(format_metric(metrics.get(name)) for _, name in DYNAMICS_COLUMNS)
        rows.append(
            (summary.key, ", ".join(summary.dataset_ids), str(summary.runs), fmt(summary.train_seconds, 0), *values)
        )
    headers = ("key", "dataset", "runs using it", "training s", *(header for header, _ in DYNAMICS_COLUMNS))
    return Table("Dynamics models (holdout metrics: mean over elites)", headers, tuple(rows))


def format_metric(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "n/a"


def dynamics_notes(data: ReportData) -> list[str]:
    return [
        f"Dynamics model {summary.key} could not be loaded from the store: its metrics are not shown "
        "and its training time is the one runs recorded."
        for summary in data.dynamics
        if summary.metrics is None
    ]


def markdown_table(table: Table) -> str:
    """A Markdown table padded to aligned columns, so it reads well in a terminal too."""
    widths = [max(len(cell) for cell in column) for column in zip(table.headers, *table.rows)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + " |"

    return "\n".join(
        [
            line(table.headers),
            "|" + "|".join("-" * (width + 2) for width in widths) + "|",
            *(line(row) for row in table.rows),
        ]
    )


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in table.headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def terminal_summary(data: ReportData) -> str:
    """The results tables and the model-based vs model-free verdicts, for printing."""
    tables = [results_table(data, dataset_id) for dataset_id in data.datasets] + [family_table(data)]
    return "\n\n".join(f"{table.title}\n{markdown_table(table)}" for table in tables)


# ---------------------------------------------------------------- plots


def plot_dataset(data: ReportData, dataset_id: str, path: Path) -> Path:
    """Learning curves (mean ± std band over seeds) beside the final scores (IQM, 95% CI, and each seed)."""

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = data.cells_of(dataset_id)
    colors = {cell.algo: plt.get_cmap("tab10")(index % 10) for index, cell in enumerate(cells)}
    figure, (curves, finals) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    for cell in cells:
        steps, mean, std = learning_curve(cell.runs)
        curves.plot(
            steps,
            mean,
            color=colors[cell.algo],
            linestyle="-" if cell.model_based else "--",
            label=f"{cell.algo} ({cell.family})",
        )
        curves.fill_between(steps, mean - std, mean + std, color=colors[cell.algo], alpha=0.2)
    curves.set(
        xlabel="gradient steps",
        ylabel=score_unit(data, dataset_id),
        title=f"{dataset_id}: learning curves (mean ± std)",
    )
    curves.grid(alpha=0.3)
    curves.legend(fontsize=8)
    for row, cell in enumerate(cells):
        estimate = cell.final_iqm
        finals.errorbar(
            estimate.value,
            row,
            xerr=[[estimate.value - estimate.low], [estimate.high - estimate.value]],
            fmt="o",
            color=colors[cell.algo],
            capsize=4,
        )
        finals.scatter(
            [run.final_score for run in cell.runs],
            [row + 0.2] * len(cell.runs),
            color=colors[cell.algo],
            marker="x",
            s=20,
            alpha=0.7,
        )
    finals.set_yticks(range(len(cells)), [cell.algo for cell in cells])
    finals.invert_yaxis()
    finals.set(xlabel=f"final {score_unit(data, dataset_id)}", title="final: IQM with 95% CI (x = seeds)")
    finals.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def learning_curve(runs: Sequence[RunRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std over seeds at every evaluated step (seeds missing a step are left out of that point)."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for step, score in run.history:
            by_step[step].append(score)
    steps = np.array(sorted(by_step))
    mean = np.array([np.mean(by_step[step]) for step in steps])
    std = np.nan_to_num([sample_std(by_step[step]) for step in steps])
    return steps, mean, std


def plot_file_name(dataset_id: str) -> str:
    return dataset_id.replace("/", "_") + ".png"


# ---------------------------------------------------------------- documents


def count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def header_lines(data: ReportData) -> list[str]:
    runs = [run for cell in data.cells for run in cell.runs]
    budgets = sorted({run.steps for run in runs})
    episodes = sorted({run.eval_episodes for run in runs})
    lines = [
        f"{count(len(runs), 'finished run')}: {count(len({c.algo for c in data.cells}), 'learner')} x "
        f"{count(len(data.datasets), 'dataset')}, "
        f"budget {' / '.join(f'{steps:,}' for steps in budgets)} gradient steps, final evaluation "
        f"over {' / '.join(map(str, episodes))} episodes.",
        "Final = the policy after the last step (the headline). Best during training = the best periodic evaluation; "
        "choosing it peeks at the environment, so it is optimistic. Std is over seeds (n-1); IQM is "
        "the mean of the middle "
        f"50% of runs with a percentile bootstrap 95% CI over runs (seed {BOOTSTRAP_SEED}). "
        "Model-based wall-clock and updates/s "
        "include the dynamics model's pretraining.",
    ]
    if len(budgets) > 1:
        lines.append(f"WARNING: runs used different budgets ({budgets}); rows are not directly comparable.")
    if data.unfinished:
        lines.append(f"Not finished (left out): {', '.join(data.unfinished)}.")
    return lines


@dataclass(frozen=True)
class Section:
    table: Table
    notes: tuple[str, ...] = ()
    plot_of: str | None = None  # the dataset whose figure follows the table


def sections(data: ReportData) -> list[Section]:
    """The report's sections in document order; each is headed by its table's title."""
    result = [Section(family_table(data))]
    result += [Section(results_table(data, dataset_id), plot_of=dataset_id) for dataset_id in data.datasets]
    if data.aggregate:
        result.append(Section(aggregate_table(data)))
    if data.dynamics:
        result.append(Section(dynamics_table(data), notes=tuple(dynamics_notes(data))))
    return result


def render_markdown(data: ReportData) -> str:
    parts = [f"# Offline RL comparison: {data.title}", *header_lines(data)]
    for section in sections(data):
        parts += [f"## {section.table.title}", markdown_table(section.table), *section.notes]
        if section.plot_of is not None:
            parts.append(f"![{section.plot_of}]({PLOTS_DIR}/{plot_file_name(section.plot_of)})")
    return "\n\n".join(parts) + "\n"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
td { white-space: nowrap; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #ddd; }
p.note { color: #555; font-size: 0.9em; }
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
        if section.plot_of is not None:
            encoded = base64.b64encode(plots[section.plot_of].read_bytes()).decode("ascii")
            parts.append(
                f"<img alt='{html.escape(section.plot_of)}: learning curves and final scores' "
                f"src='data:image/png;base64,{encoded}'>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    folder: Path, title: str | None = None, algo_order: Sequence[str] = (), dynamics_store: str | None = None
) -> tuple[ReportData, ReportPaths]:
    """Summarize the finished runs under ``folder`` and write report.md, report.html and plots/*.png into it."""
    folder = Path(folder)
    data = summarize(folder, title=title, algo_order=algo_order, dynamics_store=dynamics_store)
    plots = {
        dataset_id: plot_dataset(data, dataset_id, folder / PLOTS_DIR / plot_file_name(dataset_id))
        for dataset_id in data.datasets
    }
    save_text(render_markdown(data), folder / MARKDOWN_NAME)
    save_text(render_html(data, plots), folder / HTML_NAME)
    return data, ReportPaths(folder / MARKDOWN_NAME, folder / HTML_NAME, tuple(plots.values()))
