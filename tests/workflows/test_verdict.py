"""The model-based vs model-free verdict on hand cases whose answer is known, and what the report shows of it."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.workflows.fake_runs import fabricate_grid, fabricate_run, write_metrics
from workflows.report import summarize, terminal_summary, write_report
from workflows.report.plots import learning_curve
from workflows.report.stats import iqm, optimality_gap, probability_of_improvement
from workflows.report.verdict import (
    MIN_SEEDS,
    MODEL_BASED_AHEAD,
    MODEL_FREE_AHEAD,
    NO_CLEAR_DIFFERENCE,
    Learner,
    compare,
)

DATASET = "toy/pendulum/mixed-v0"


@pytest.fixture(autouse=True)
def empty_dynamics_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MBRL_DYNAMICS_STORE", str(tmp_path / "no-dynamics-here"))


def learner(algo: str, *per_dataset: list[float]) -> Learner:
    return Learner(algo, tuple(np.array(scores) for scores in per_dataset))


# ---------------------------------------------------------------- the comparison itself


def test_identical_distributions_give_an_interval_covering_zero():
    same = [40.0, 50.0, 60.0, 55.0]
    result = compare(DATASET, [learner("mopo", same)], [learner("iql", same)])
    assert result.gap is not None and result.gap.value == 0.0
    assert result.gap.low < 0.0 < result.gap.high
    assert result.probability == 0.5
    assert result.verdict == NO_CLEAR_DIFFERENCE


def test_clearly_separated_learners_are_called_ahead_either_way():
    high, low = [80.0, 81.0, 82.0], [40.0, 41.0, 42.0]
    based_wins = compare(DATASET, [learner("mopo", high)], [learner("iql", low)])
    assert based_wins.gap is not None and based_wins.gap.low > 0
    assert based_wins.gap.value == pytest.approx(40.0)
    assert (based_wins.verdict, based_wins.probability) == (MODEL_BASED_AHEAD, 1.0)
    free_wins = compare(DATASET, [learner("mopo", low)], [learner("iql", high)])
    assert free_wins.gap is not None and free_wins.gap.high < 0
    assert (free_wins.verdict, free_wins.probability) == (MODEL_FREE_AHEAD, 0.0)


def test_a_tie_is_no_difference():
    result = compare(DATASET, [learner("mopo", [50.0] * 3)], [learner("iql", [50.0] * 3)])
    assert result.gap is not None and (result.gap.low, result.gap.value, result.gap.high) == (0.0, 0.0, 0.0)
    assert result.verdict == NO_CLEAR_DIFFERENCE and result.probability == 0.5


def test_overlapping_seeds_are_no_clear_difference_even_with_a_positive_gap():
    result = compare(DATASET, [learner("mopo", [40.0, 60.0, 55.0])], [learner("iql", [50.0, 52.0, 48.0])])
    assert result.gap_value == pytest.approx(5.0 / 3)
    assert result.verdict == NO_CLEAR_DIFFERENCE
    assert result.probability == pytest.approx(probability_of_improvement([40, 60, 55], [50, 52, 48]))


@pytest.mark.parametrize("seeds", [1, MIN_SEEDS - 1])
def test_too_few_seeds_show_no_interval(seeds):
    result = compare(DATASET, [learner("mopo", [80.0, 81.0][:seeds])], [learner("iql", [40.0, 41.0][:seeds])])
    assert result.gap is None and result.probability is None
    assert result.verdict == f"too few seeds to tell (n = {seeds})"
    assert result.gap_value == pytest.approx(40.0)


def test_the_fewest_seeds_of_any_learner_decide():
    enough, one = [80.0, 81.0, 82.0], [40.0]
    result = compare(DATASET, [learner("mopo", enough)], [learner("iql", enough), learner("bc", one)])
    assert result.verdict == "too few seeds to tell (n = 1)"


def test_the_best_of_each_family_is_compared_and_all_their_runs_counted():
    result = compare(
        DATASET,
        [learner("mopo", [60.0, 62.0, 61.0]), learner("combo", [70.0, 72.0, 71.0])],
        [learner("iql", [50.0, 52.0, 51.0]), learner("bc", [30.0, 31.0, 32.0])],
    )
    assert (result.model_based, result.model_free) == ("combo", "iql")
    assert result.gap_value == pytest.approx(20.0) and result.runs == (6, 6)
    assert result.verdict == MODEL_BASED_AHEAD


def test_pooled_over_datasets_the_score_is_the_iqm_of_all_runs():
    # Pooled runs of mopo: 10, 20, 30, 70, 80, 90 -> IQM over the middle (cut 1 each end) = mean(20, 30, 70, 80) = 50.
    mopo = learner("mopo", [10.0, 20.0, 30.0], [70.0, 80.0, 90.0])
    iql = learner("iql", [5.0, 6.0, 7.0], [60.0, 61.0, 62.0])
    result = compare("all 2 datasets (IQM)", [mopo], [iql])
    assert result.model_based_score == pytest.approx(50.0)
    assert result.model_free_score == pytest.approx(iqm([5.0, 6.0, 7.0, 60.0, 61.0, 62.0]))
    # P(X > Y) averaged over the datasets: 1 on the first, 1 on the second.
    assert result.probability == 1.0 and result.runs == (6, 6)


# ---------------------------------------------------------------- the report


def test_the_verdict_table_reports_the_eval_files(tmp_path):
    grid = {"mopo": (True, [80.0, 82.0, 81.0]), "iql": (False, [40.0, 45.0, 41.0])}
    fabricate_grid(tmp_path, grid, DATASET)
    data, paths = write_report(tmp_path)
    (verdict,) = data.verdicts
    assert verdict.gap is not None
    assert verdict.gap.value == pytest.approx(np.mean(grid["mopo"][1]) - np.mean(grid["iql"][1]))
    row = next(line for line in terminal_summary(data).splitlines() if line.startswith(f"| {DATASET}"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1:3] == [f"mopo {np.mean(grid['mopo'][1]):.1f}", f"iql {np.mean(grid['iql'][1]):.1f}"]
    assert cells[3] == f"{verdict.gap.value:+.1f} [{verdict.gap.low:+.1f}, {verdict.gap.high:+.1f}]"
    assert cells[4:] == ["1.00", "3 vs 3", "model-based ahead"]
    assert row in paths.markdown.read_text()


def test_one_seed_asks_for_more_with_the_command_for_this_folder(tmp_path):
    fabricate_grid(tmp_path, {"mopo": (True, [57.7]), "td3bc": (False, [47.4])}, DATASET)
    grid = {"name": "hc", "datasets": [DATASET], "algos": ["mopo", "td3bc"], "seeds": [0], "steps": 1000}
    data = summarize(tmp_path, grid=grid | {"overrides": {}, "dynamics_store": None})
    text = terminal_summary(data)
    assert "| +10.3 (no CI)" in text and "| too few seeds to tell (n = 1) |" in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {DATASET}") and "mopo 57.7" in line)
    assert "[" not in row and "| n/a " in row  # neither an interval nor P(MB > MF)
    command = f"mbrl compare --datasets {DATASET} --algos mopo td3bc --steps 1000 --name hc --seeds {MIN_SEEDS}"
    assert "too few seeds to tell (n = 1): add seeds to this compare folder" in text
    assert f"\n    {command} --out {tmp_path.parent}\n" in text


def test_only_one_family_is_said_so(tmp_path):
    fabricate_grid(tmp_path, {"iql": (False, [50.0, 52.0, 48.0])}, DATASET)
    text = terminal_summary(summarize(tmp_path))
    assert "| only one family was run |" in text and "none run" in text


def test_a_damaged_eval_file_skips_its_run_with_one_warning(tmp_path):
    fabricate_grid(tmp_path, {"mopo": (True, [80.0, 82.0, 81.0]), "iql": (False, [40.0, 45.0, 41.0])}, DATASET)
    truncated = tmp_path / "runs" / f"iql-{DATASET.replace('/', '_')}-s2" / "eval.json"
    truncated.write_text(truncated.read_text()[:100])
    extra = fabricate_run(tmp_path, "iql", DATASET, 7, False, 10.0) / "eval.json"
    extra.write_text('{"algo": "iql", "finished": true}')
    data, paths = write_report(tmp_path)
    assert [len(cell.runs) for cell in data.cells] == [3, 2]
    text = terminal_summary(data)
    warnings = [line for line in text.splitlines() if line.startswith("warning:")]
    assert warnings == [  # in folder order
        f"warning: skipped {truncated}: not valid JSON",
        f"warning: skipped {extra}: no dataset_id field",
    ]
    assert f"warning: skipped {truncated}" in paths.markdown.read_text()


def test_runs_on_other_contents_of_one_dataset_are_flagged(tmp_path):
    fabricate_grid(tmp_path, {"mopo": (True, [80.0, 82.0, 81.0]), "iql": (False, [40.0, 45.0, 41.0])}, DATASET)
    for run_dir, fingerprint in (
        (f"iql-{DATASET.replace('/', '_')}-s0", "aaaa"),
        ("mopo-" + DATASET.replace("/", "_") + "-s1", "bbbb"),
    ):
        (tmp_path / "runs" / run_dir / "config.yaml").write_text(f"algo: x\ndataset:\n  fingerprint: {fingerprint}\n")
    data, paths = write_report(tmp_path)
    warning = f"WARNING: the runs of {DATASET} were trained on 2 different contents of it (fingerprints aaaa, bbbb"
    assert warning in paths.markdown.read_text() and warning in terminal_summary(data)
    (tmp_path / "runs" / run_dir / "config.yaml").write_text("algo: x\ndataset:\n  fingerprint: aaaa\n")
    _, paths = write_report(tmp_path)
    assert "different contents" not in paths.markdown.read_text()  # runs that record no fingerprint do not count


def test_only_damaged_runs_is_one_clear_error(tmp_path):
    from mbrl_core.errors import ArtifactError

    fabricate_run(tmp_path, "iql", DATASET, 0, False, 10.0)
    path = tmp_path / "runs" / f"iql-{DATASET.replace('/', '_')}-s0" / "eval.json"
    path.write_text("")
    with pytest.raises(ArtifactError, match=re.escape(str(path))):
        summarize(tmp_path)


TWO_DATASETS = {
    "a/one-v0": {"mopo": [20.0, 40.0, 60.0], "iql": [30.0, 50.0, 110.0]},
    "b/two-v0": {"mopo": [70.0, 80.0, 90.0], "iql": [10.0, 20.0, 35.0]},
}


def test_across_datasets_iqm_optimality_gap_and_profiles(tmp_path):
    for dataset_id, learners in TWO_DATASETS.items():
        fabricate_grid(tmp_path, {algo: (algo == "mopo", finals) for algo, finals in learners.items()}, dataset_id)
    data, paths = write_report(tmp_path)
    aggregate = {learner.algo: learner for learner in data.aggregate}
    for algo in ("mopo", "iql"):
        runs = [score for learners in TWO_DATASETS.values() for score in learners[algo]]
        assert aggregate[algo].runs == 6
        assert aggregate[algo].iqm.value == pytest.approx(iqm(runs))
        assert aggregate[algo].optimality_gap.value == pytest.approx(optimality_gap(runs))
        assert aggregate[algo].iqm.low <= aggregate[algo].iqm.value <= aggregate[algo].iqm.high
    # mopo: 20 40 60 70 80 90 -> IQM mean(40, 60, 70, 80) = 62.5; gap below 100: mean(80 60 40 30 20 10) = 40.
    assert aggregate["mopo"].iqm.value == pytest.approx(62.5)
    assert aggregate["mopo"].optimality_gap.value == pytest.approx(40.0)
    # iql's 110 earns no credit: mean(70 50 0 90 80 65) = 59.17.
    assert aggregate["iql"].optimality_gap.value == pytest.approx(355.0 / 6)
    pooled = data.verdicts[-1]
    assert pooled.scope == "all 2 datasets (IQM)" and pooled.runs == (6, 6)
    page = paths.html.read_text()
    for title in ("IQM and optimality gap", "performance profiles"):
        assert re.search(rf"<img alt='[^']*{title}' src='data:image/png;base64,", page)
    assert {path.name for path in paths.plots} >= {"aggregate.png", "performance-profiles.png"}


def test_learning_curves_start_at_step_0_with_the_seeds_min_and_max(tmp_path):
    fabricate_grid(tmp_path, {"iql": (False, [50.0, 52.0, 48.0])}, DATASET)
    (cell,) = summarize(tmp_path).cells
    steps, mean, low, high = learning_curve(cell.runs)
    np.testing.assert_array_equal(steps, [0, 500, 1000])
    np.testing.assert_allclose(mean, [0.0, 60.0, 50.0])
    np.testing.assert_allclose(low, [0.0, 58.0, 48.0])
    np.testing.assert_allclose(high, [0.0, 62.0, 52.0])


def penalty_rows(reward: float, penalty: float) -> list[dict[str, float]]:
    """Training rows with the two columns, an evaluation row without them."""
    return [
        {"step": 100, "train/model_reward_mean": reward, "train/penalty_mean": penalty, "train/alpha": 0.5,
         "train/entropy": 4.0},
        {"step": 100, "eval/return_mean": 5.0},
        {"step": 200, "train/model_reward_mean": reward + 1.0, "train/penalty_mean": 3 * penalty, "train/alpha": 0.25,
         "train/entropy": 2.0},
    ]  # fmt: skip


def test_penalty_vs_model_reward_per_model_based_run(tmp_path):
    fabricate_grid(tmp_path, {"mopo": (True, [80.0, 82.0, 81.0]), "iql": (False, [40.0, 45.0, 41.0])}, DATASET)
    runs = tmp_path / "runs"
    write_metrics(runs / f"mopo-{DATASET.replace('/', '_')}-s0", penalty_rows(reward=1.0, penalty=2.0))
    write_metrics(runs / f"mopo-{DATASET.replace('/', '_')}-s1", [{"step": 100, "train/q_loss": 1.0}])
    data, paths = write_report(tmp_path)
    traces = {run.seed: run.penalty for cell in data.cells for run in cell.runs if run.algo == "mopo"}
    assert traces[1] is None and traces[2] is None  # no columns, no metrics.csv: nothing shown
    assert traces[0] is not None and traces[0].steps == (100, 200)
    assert (traces[0].mean_model_reward, traces[0].mean_penalty) == (1.5, 4.0)
    assert traces[0].mean_entropy_bonus == 1.25  # (0.5 * 4 + 0.25 * 2) / 2
    markdown = paths.markdown.read_text()
    assert "## Reward penalty vs model reward" in markdown
    # reward mean 1.5, penalty mean 4.0, ratio 2.67, last 2.0 and 6.0, entropy bonus 1.25
    assert f"| {DATASET} | mopo    | 0    | 1.500 " in markdown and "| 4.000 " in markdown and "| 2.67 " in markdown
    assert "entropy bonus α·H (mean)" in markdown and "| 1.250 " in markdown
    assert "penalty vs model reward" in paths.html.read_text()


def test_no_penalty_columns_no_penalty_section(tmp_path):
    fabricate_grid(tmp_path, {"mopo": (True, [80.0, 82.0, 81.0]), "iql": (False, [40.0, 45.0, 41.0])}, DATASET)
    _, paths = write_report(tmp_path)
    assert "Reward penalty" not in paths.markdown.read_text()
    assert len(paths.plots) == 1


def write_sac_config(run_dir, act_dim: int, target_entropy: float | None) -> None:
    learner = {"auto_entropy": True, "target_entropy": target_entropy}
    config = {"algo": "cql", "learner": learner, "dataset": {"action_low": [-1.0] * act_dim}}
    (run_dir / "config.yaml").write_text(json.dumps(config))  # JSON is YAML


def test_policy_entropy_against_uniform_and_target_per_sac_based_run(tmp_path):
    fabricate_grid(tmp_path, {"cql": (False, [2.0, 3.0, 4.0]), "iql": (False, [40.0, 45.0, 41.0])}, DATASET)
    runs = tmp_path / "runs"
    cql = [runs / f"cql-{DATASET.replace('/', '_')}-s{seed}" for seed in range(3)]
    stuck = [{"step": 100, "train/alpha": 1.0, "train/entropy": 3.0}, {"step": 100, "eval/return_mean": 5.0},
             {"step": 200, "train/alpha": 0.5, "train/entropy": 1.0}]  # fmt: skip
    write_metrics(cql[0], stuck)
    write_sac_config(cql[0], act_dim=4, target_entropy=None)  # uniform 4 ln 2 = 2.77, target -4
    write_metrics(cql[1], [{"step": 100, "train/alpha": 2.0, "train/entropy": -5.0}])
    write_sac_config(cql[1], act_dim=4, target_entropy=-4.5)
    write_metrics(cql[2], [{"step": 100, "train/q_loss": 1.0}])  # no α/entropy columns: not SAC-based
    data, paths = write_report(tmp_path)
    traces = {run.seed: run.entropy for cell in data.cells for run in cell.runs if run.algo == "cql"}
    assert traces[2] is None and all(
        run.entropy is None for cell in data.cells for run in cell.runs if run.algo == "iql"
    )
    assert traces[0] is not None and traces[0].steps == (100, 200) and traces[0].entropy == (3.0, 1.0)
    assert traces[0].uniform == pytest.approx(4 * np.log(2)) and traces[0].target == -4.0
    assert traces[0].share_left == pytest.approx(5.0 / (4 * np.log(2) + 4.0))
    assert traces[1] is not None and traces[1].target == -4.5 and traces[1].share_left < 0
    markdown = paths.markdown.read_text()
    assert "## Policy entropy (SAC-based learners" in markdown
    assert f"| {DATASET} | cql     | 0    | 2.77 " in markdown and "| 3.00 → 1.00 " in markdown and "| 74% " in markdown
    assert "| 1.000 → 0.500 " in markdown and "| reached " in markdown


def test_a_damaged_metrics_line_costs_that_line_only(tmp_path):
    fabricate_grid(tmp_path, {"mopo": (True, [80.0, 82.0, 81.0]), "iql": (False, [40.0, 45.0, 41.0])}, DATASET)
    run = tmp_path / "runs" / f"mopo-{DATASET.replace('/', '_')}-s0"
    write_metrics(run, penalty_rows(reward=1.0, penalty=2.0))
    with open(run / "metrics.csv", "a") as stream:
        stream.write("300,1.0,2.0,0.2,1e")  # a kill mid-write: the row stops inside a number
    data, paths = write_report(tmp_path)
    record = next(run for cell in data.cells for run in cell.runs if run.algo == "mopo" and run.seed == 0)
    assert record.penalty is not None and record.penalty.steps == (100, 200)
    assert record.entropy is not None and record.entropy.steps == (100, 200) and record.entropy.uniform is None
    assert record.entropy.share_left is None  # no config with the action box: no reference entropies
    assert "## Reward penalty vs model reward" in paths.markdown.read_text()


def test_no_entropy_columns_no_entropy_section(tmp_path):
    fabricate_grid(tmp_path, {"mopo": (True, [80.0, 82.0, 81.0]), "iql": (False, [40.0, 45.0, 41.0])}, DATASET)
    _, paths = write_report(tmp_path)
    assert "Policy entropy" not in paths.markdown.read_text()


def test_report_is_reproducible(tmp_path):
    fabricate_grid(tmp_path, {"mopo": (True, [80.0, 60.0, 71.0]), "iql": (False, [40.0, 75.0, 41.0])}, DATASET)
    first = summarize(tmp_path)
    assert summarize(tmp_path).verdicts == first.verdicts
