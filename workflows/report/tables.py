"""Tables: the report's numbers as rows of text, rendered as aligned Markdown (also for the terminal) or HTML."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workflows.report.records import EntropyTrace, RunRecord
from workflows.report.summary import CellSummary, ReportData
from workflows.report.verdict import MIN_SEEDS, Comparison, too_few_seeds_verdict


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


# ---------------------------------------------------------------- formatting


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def signed(value: float) -> str:
    return f"{value:+.1f}"


def mean_std(mean: float, std: float) -> str:
    return fmt(mean) if math.isnan(std) else f"{fmt(mean)} ± {fmt(std)}"


def interval(value: float, low: float, high: float) -> str:
    if math.isnan(low):
        return f"{fmt(value)} (no CI: < {MIN_SEEDS} seeds)"
    return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def gap_interval(comparison: Comparison) -> str:
    if comparison.gap is None:
        return f"{signed(comparison.gap_value)} (no CI)"
    gap = comparison.gap
    return f"{signed(gap.value)} [{signed(gap.low)}, {signed(gap.high)}]"


def count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def score_unit(data: ReportData, dataset_id: str) -> str:
    return "normalized score" if data.normalized[dataset_id] else "raw return (no reference scores)"


# ---------------------------------------------------------------- the tables


def results_table(data: ReportData, dataset_id: str) -> Table:
    unit = score_unit(data, dataset_id)
    rows = tuple(
        (
            cell.algo,
            cell.family,
            str(len(cell.runs)),
            mean_std(cell.final_mean, cell.final_std),
            interval(cell.final_iqm.value, cell.final_iqm.low, cell.final_iqm.high),
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


COMPARISON_HEADERS = ("gap MB − MF [95% CI]", "P(MB > MF)", "runs MB vs MF", "verdict")


def comparison_cells(comparison: Comparison) -> tuple[str, ...]:
    return (
        gap_interval(comparison),
        fmt(comparison.probability, 2),
        f"{comparison.runs[0]} vs {comparison.runs[1]}",
        comparison.verdict,
    )


def verdict_table(data: ReportData) -> Table:
    """Best model-based vs best model-free learner, per dataset and pooled; a one-family dataset says so."""
    compared = {comparison.scope for comparison in data.verdicts}
    one_family: list[tuple[str, ...]] = []
    for dataset_id in data.datasets:
        if dataset_id in compared:
            continue
        cells = data.cells_of(dataset_id)
        based, free = (best_label([c for c in cells if c.model_based == side]) for side in (True, False))
        one_family.append((dataset_id, based, free, "n/a", "n/a", "n/a", "only one family was run"))
    rows: list[tuple[str, ...]] = [
        (
            comparison.scope,
            f"{comparison.model_based} {fmt(comparison.model_based_score)}",
            f"{comparison.model_free} {fmt(comparison.model_free_score)}",
            *comparison_cells(comparison),
        )
        for comparison in data.verdicts
    ]
    headers = ("dataset", "best model-based", "best model-free", *COMPARISON_HEADERS)
    title = "Model-based vs model-free: the gap between the best of each family"
    return Table(title, headers, (*rows, *one_family))


def best_label(cells: Sequence[CellSummary]) -> str:
    best = max(cells, key=lambda cell: cell.final_mean, default=None)
    return f"{best.algo} {fmt(best.final_mean)}" if best else "none run"


def pairs_table(data: ReportData) -> Table:
    rows = tuple(
        (
            comparison.scope,
            f"{comparison.model_based} {fmt(comparison.model_based_score)}",
            f"{comparison.model_free} {fmt(comparison.model_free_score)}",
            *comparison_cells(comparison),
        )
        for comparison in data.pairs
    )
    headers = ("dataset", "model-based", "model-free", *COMPARISON_HEADERS)
    return Table("Each model-based learner vs each model-free learner", headers, rows)


def verdict_notes(data: ReportData) -> list[str]:
    notes = [
        "Gap = score of the model-based learner minus the model-free one: on one dataset the mean final score "
        "over seeds; over all datasets the IQM of all runs. The 95% CI comes from a bootstrap stratified over "
        "seeds (within each learner, and within each dataset when they are pooled), expanded for small samples; "
        "for the best of a family, the best learner is picked again in every bootstrap replicate. "
        "'ahead' only when the CI excludes 0, 'no clear difference' when it covers 0. P(MB > MF): the "
        "probability that a run of the model-based learner scores higher than a run of the model-free one "
        "(ties count half; averaged over datasets when pooled).",
    ]
    if data.add_seeds is not None:
        notes.append(too_few_seeds_note(data))
    return notes


def too_few_seeds_note(data: ReportData) -> str:
    fewest = min(comparison.fewest_seeds for comparison in [*data.verdicts, *data.pairs] if comparison.too_few_seeds)
    return (
        f"{too_few_seeds_verdict(fewest)}: add seeds to this compare folder (finished runs are kept, only the new "
        f"seeds train):\n    {data.add_seeds}\n"
        f"Why no interval below {MIN_SEEDS} seeds per learner (on every dataset): with fewer, a bootstrap has "
        "almost no spread to resample; on two identical learners with 2 seeds each, a 95% interval of the gap "
        "still excluded 0 in 21% of trials (9% with 3 seeds, 5% with 4 or more)."
    )


def aggregate_table(data: ReportData) -> Table:
    rows = tuple(
        (
            learner.algo,
            learner.family,
            str(learner.runs),
            interval(learner.iqm.value, learner.iqm.low, learner.iqm.high),
            interval(learner.optimality_gap.value, learner.optimality_gap.low, learner.optimality_gap.high),
        )
        for learner in data.aggregate
    )
    return Table(
        f"Across {len(data.aggregate_datasets)} datasets (normalized final scores, bootstrap stratified by dataset)",
        ("learner", "family", "runs", "IQM [95% CI] (higher is better)", "optimality gap [95% CI] (lower is better)"),
        rows,
    )


def penalty_table(data: ReportData) -> Table:
    rows = []
    for cell in data.cells:
        for run in cell.runs:
            if run.penalty is None:
                continue
            trace = run.penalty
            ratio = trace.mean_penalty / abs(trace.mean_model_reward) if trace.mean_model_reward else math.nan
            rows.append(
                (
                    run.dataset_id,
                    run.algo,
                    str(run.seed),
                    fmt(trace.mean_model_reward, 3),
                    fmt(trace.mean_penalty, 3),
                    fmt(ratio, 2),
                    fmt(trace.model_reward[-1], 3),
                    fmt(trace.penalty[-1], 3),
                    fmt(trace.mean_entropy_bonus, 3),
                )
            )
    headers = (
        "dataset",
        "learner",
        "seed",
        "model reward (mean)",
        "penalty (mean)",
        "penalty ÷ model reward (absolute)",
        "model reward (last)",
        "penalty (last)",
        "entropy bonus α·H (mean)",
    )
    return Table("Reward penalty vs model reward (model-based runs, as logged in metrics.csv)", headers, tuple(rows))


PENALTY_NOTE = (
    "Means over the logged training steps of metrics.csv. A penalty of the order of the model reward or "
    "larger (ratio ≥ 1) swamps the reward: the policy then mostly learns to avoid uncertain states. The entropy "
    "bonus α·H is what the SAC-based learners' soft targets add per step: while it is larger than the model "
    "reward (early in training, α starts at 1), the policy mostly learns to stay random, and a short budget may "
    "end before the reward takes over."
)


def entropy_table(data: ReportData) -> Table:
    rows = tuple(entropy_row(run, run.entropy) for cell in data.cells for run in cell.runs if run.entropy)
    headers = (
        "dataset",
        "learner",
        "seed",
        "entropy of the uniform policy",
        "target entropy",
        "entropy, first → last logged",
        "α, first → last logged",
        "still to go to the target at the end",
    )
    return Table("Policy entropy (SAC-based learners, as logged in metrics.csv)", headers, rows)


def entropy_row(run: RunRecord, trace: EntropyTrace) -> tuple[str, ...]:
    left = trace.share_left
    return (
        run.dataset_id,
        run.algo,
        str(run.seed),
        fmt(trace.uniform, 2),
        fmt(trace.target, 2),
        f"{fmt(trace.entropy[0], 2)} → {fmt(trace.entropy[-1], 2)}",
        f"{fmt(trace.alpha[0], 3)} → {fmt(trace.alpha[-1], 3)}",
        "n/a" if left is None else ("reached" if left <= 0 else f"{100 * left:.0f}%"),
    )


ENTROPY_NOTE = (
    "Entropy in nats of the policy's actions in the unit action box: the uniform policy has act_dim · ln 2, and "
    'auto-entropy tunes α towards the target (-act_dim unless the config sets it). "Still to go" is the last '
    "entropy's distance to the target as a share of the way from uniform to target. Evaluation acts with the "
    "policy's mean action, so a wide policy can still score well; but while α·H outweighs the reward per step "
    "the policy mostly learns to stay random, and a short budget (or a small policy or α learning rate) may end "
    "before it settles."
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


# ---------------------------------------------------------------- rendering


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
    """Skipped runs, the results tables and the model-based vs model-free verdicts, for printing."""
    tables = [results_table(data, dataset_id) for dataset_id in data.datasets] + [verdict_table(data)]
    parts = ["\n".join(data.warnings)] if data.warnings else []
    parts += [f"{table.title}\n{markdown_table(table)}" for table in tables]
    if data.add_seeds is not None:
        parts.append(too_few_seeds_note(data))
    return "\n\n".join(parts)
