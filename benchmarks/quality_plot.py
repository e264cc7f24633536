"""The quality benchmark's results as a bar chart (one panel per dataset), next to its JSON.

    python benchmarks/quality_plot.py benchmarks/results/quality.json      # writes quality.png beside it

``benchmarks/quality.py`` draws it too whenever it writes the results.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from policies.registry import get_learner  # noqa: E402

COLOURS = {"model-based": "#2a7ab0", "model-free": "#b0b0b0"}
MEDIUM_LINE = "#c04040"


def normalized(value: float, behaviour: dict[str, Any]) -> float:
    low, high = behaviour["ref_min_score"], behaviour["ref_max_score"]
    return 100.0 * (value - low) / (high - low)


def draw_dataset(axes, dataset_id: str, cells: dict[str, Any], algos: list[str], behaviour: dict[str, Any]) -> None:
    """One panel: a bar per learner (mean over seeds, ±std from 2 seeds), 'not run' where a cell is missing."""
    for position, algo in enumerate(algos):
        cell = cells.get(algo)
        if cell is None:
            axes.text(position, 1, "not run", rotation=90, ha="center", va="bottom", fontsize=8, color="#777777")
            continue
        family = "model-based" if get_learner(algo).model_based else "model-free"
        spread = {"yerr": cell["std"], "capsize": 3} if cell["std"] else {}
        axes.bar(position, cell["mean"], color=COLOURS[family], **spread)
        label = f"{cell['mean']:.1f}\n(n={cell['seeds']})"
        axes.text(position, max(cell["mean"], 0) + 1, label, ha="center", va="bottom", fontsize=7)
    medium_return = behaviour.get("medium_return")
    if medium_return is not None:
        level = normalized(medium_return, behaviour)
        axes.axhline(level, color=MEDIUM_LINE, linestyle="--", linewidth=1)
    axes.set_xticks(range(len(algos)), algos, rotation=45, fontsize=8)
    axes.set_title(dataset_id, fontsize=9)
    axes.set_ylabel("normalized score", fontsize=8)
    means = [cell["mean"] + (cell["std"] or 0.0) for cell in cells.values()]
    axes.set_ylim(min([0.0, *means]) - 2, max(means, default=10.0) * 1.2 + 3)  # a dataset with no cell yet: 0 to 15


def plot_quality(results: dict[str, Any], path: Path, learners: tuple[str, ...] = ()) -> Path:
    """Draw ``results`` (quality.py's JSON document) to ``path``: a bar for each of ``learners`` ("not run"
    where it has no cell) and for every other learner with a cell."""
    datasets = list(results["results"])
    algos = list(dict.fromkeys([*learners, *(algo for cells in results["results"].values() for algo in cells)]))
    algos = sorted(algos, key=lambda algo: not get_learner(algo).model_based)  # model-based first, order kept
    figure, panels = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 4.0), squeeze=False)
    for axes, dataset_id in zip(panels[0], datasets):
        behaviour = results["behaviour"][dataset_id.split("/")[0]]
        draw_dataset(axes, dataset_id, results["results"][dataset_id], algos, behaviour)
    updates = results["budget"]["updates_per_run"]
    title = f"final normalized score after {updates:,} updates (this collection's random 0, expert 100)"
    figure.suptitle(title, fontsize=9)
    legend = [Patch(color=colour, label=family) for family, colour in COLOURS.items()]
    legend.append(Line2D([], [], color=MEDIUM_LINE, linestyle="--", label="the medium policy (behaviour)"))
    figure.legend(handles=legend, loc="lower center", ncol=3, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/quality_plot.py <results.json>")
    source = Path(sys.argv[1])
    print(f"wrote {plot_quality(json.loads(source.read_text()), source.with_suffix('.png'))}")


if __name__ == "__main__":
    main()
