"""The command that adds seeds to a compare folder, for verdicts that have too few to tell.

`mbrl compare` reopens ``<out>/compare-<name>/`` when given the same ``--name``:
it refuses another budget or other overrides (the grid must stay fair), takes
the union of the recorded and the asked-for datasets, learners and seeds, skips
finished runs and trains only the new ones (``--seeds N`` means seeds 0..N-1).
So the command repeats the recorded grid exactly and raises ``--seeds``, with
the same ``--out`` (a URL too) and executor options (``--executor ray``,
``--address``, ``--cpus-per-run``) as recorded in ``compare.json``.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any

import yaml

from mbrl_core.storage import is_url

DEFAULT_RUNS_DIR = Path("runs")  # `mbrl compare --out` default


def add_seeds_command(folder: Path, grid: dict[str, Any] | None, seeds: int) -> str:
    """The shell command that brings every learner of the grid in ``folder`` to ``seeds`` seeds.

    ``grid`` is the folder's ``compare.json`` record; without one (a plain folder
    of runs) the answer is the `mbrl train` command to repeat per missing seed.
    """
    if grid is None:
        return (
            f"mbrl train --algo <algo> --dataset <dataset> --seed <k> --runs-dir {shlex.quote(str(folder))} "
            "(with the same --steps and --set as the runs already there)"
        )
    words = ["mbrl", "compare", "--datasets", *grid["datasets"], "--algos", *grid["algos"]]
    words += ["--steps", str(grid["steps"]), "--name", grid["name"], "--seeds", str(max(seeds, len(grid["seeds"])))]
    for section, values in grid.get("overrides", {}).items():
        words += [word for name, value in values.items() for word in ("--set", f"{section}.{name}={literal(value)}")]
    words += out_option(folder, grid.get("out"))
    if grid.get("dynamics_store"):
        words += ["--dynamics-store", grid["dynamics_store"]]
    return shlex.join(words + executor_options(grid))


def out_option(folder: Path, recorded_out: str | None) -> list[str]:
    """``--out`` for the folder the compare is in: the recorded URL (a report on a URL is built from a local
    download of it), else the local folder's parent, left out when it is the default."""
    if recorded_out is not None and is_url(recorded_out):
        return ["--out", recorded_out]
    return [] if folder.parent == DEFAULT_RUNS_DIR else ["--out", str(folder.parent)]


def executor_options(grid: dict[str, Any]) -> list[str]:
    """The recorded executor options; the local pool's are the defaults."""
    if grid.get("executor") != "ray":
        return []
    words = ["--executor", "ray"]
    if grid.get("address"):
        words += ["--address", grid["address"]]
    if grid.get("cpus_per_run"):
        words += ["--cpus-per-run", str(grid["cpus_per_run"])]
    return words


def literal(value: Any) -> str:
    """``value`` as `--set` parses it back (YAML): 1e-05 stays a float, [64, 64] a list, a string a string."""
    return yaml.safe_dump(value, default_flow_style=True, width=math.inf).removesuffix("\n...\n").strip()
