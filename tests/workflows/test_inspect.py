"""`mbrl inspect`: the dataset report finds planted problems and reports exact statistics."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from mbrl_core.data import load_dataset
from mbrl_core.errors import DatasetError
from workflows.commands import inspect as inspect_command
from workflows.dataset_report import format_report, inspect_dataset

NAN_EPISODE, NAN_STEP, NAN_DIM = 0, 5, 2
BAD_ACTION_EPISODE, BAD_ACTION_STEP = 1, 3
CONSTANT_DIM = 1


@pytest.fixture(scope="module")
def planted_dataset_id(minari_root) -> str:
    """3,000 embedded-controller transitions with a NaN, an out-of-range action and a constant dimension, no refs."""
    from mbrl_core.minari_writer import write_minari_dataset
    from workflows.embedded import collect_episodes

    episodes = collect_episodes(3000, seed=1)
    episodes[NAN_EPISODE]["observations"][NAN_STEP, NAN_DIM] = np.nan
    episodes[BAD_ACTION_EPISODE]["actions"][BAD_ACTION_STEP, 0] = 7.5  # the space is [-3, 3]
    for episode in episodes:
        episode["observations"][:, CONSTANT_DIM] = 0.25
    write_minari_dataset("test/planted/problems-v0", episodes, env_id="InvertedPendulum-v5", overwrite=True)
    return "test/planted/problems-v0"


def test_planted_problems_are_each_reported(planted_dataset_id):
    with pytest.raises(DatasetError, match="NaN"):
        load_dataset(planted_dataset_id)  # the training loader refuses what inspect must describe
    report = inspect_dataset(planted_dataset_id)
    s = report.summary
    assert s["non_finite"]["observations"] == {"count": 1, "first_transition": NAN_STEP, "dimensions": [NAN_DIM]}
    assert s["observations"][NAN_DIM]["non_finite"] == 1
    assert s["actions_out_of_range"]["transitions"] == 1
    assert s["actions_out_of_range"]["max_excess"] == pytest.approx(4.5)
    assert [row["constant"] for row in s["observations"]] == [i == CONSTANT_DIM for i in range(4)]
    text = "\n".join(report.warnings)
    for expected in (
        "NaN/inf values in observations",
        "1 actions outside the action space",
        f"constant observations dimensions [{CONSTANT_DIM}]",
        "no reference scores",
    ):
        assert expected in text
    assert "fewer than" not in text  # 3,000 transitions is enough


def test_statistics_match_the_episodes(planted_dataset_id):
    from mbrl_core.data import dataset_info, load_minari

    dataset = load_minari(planted_dataset_id)
    episodes = list(dataset.iterate_episodes())
    returns = np.array([episode.rewards.sum() for episode in episodes])
    lengths = np.array([len(episode.actions) for episode in episodes])
    s = inspect_dataset(planted_dataset_id).summary
    assert s["transitions"] == lengths.sum() and s["episodes"] == len(episodes)
    assert s["terminals"] == sum(bool(e.terminations[-1]) for e in episodes)
    assert s["timeouts"] == sum(bool(e.truncations[-1] and not e.terminations[-1]) for e in episodes)
    assert s["returns"]["mean"] == pytest.approx(returns.mean())
    assert s["returns"]["median"] == pytest.approx(np.median(returns))
    assert (s["episode_lengths"]["min"], s["episode_lengths"]["max"]) == (lengths.min(), lengths.max())
    actions = np.concatenate([e.actions for e in episodes]).reshape(-1)
    assert s["actions"][0]["mean"] == pytest.approx(actions.mean())
    assert s["obs_dim"] == dataset_info(dataset).obs_dim
    assert 0.0 < s["coverage"]["cell_fraction"] <= 1.0


def test_clean_dataset_with_refs_has_no_warnings_and_normalized_returns(small_dataset_id, small_data):
    s = inspect_dataset(small_dataset_id).summary
    assert s["warnings"] == []
    returns = small_data.episode_returns().numpy()
    expected = [small_data.info.normalized_score(r) for r in returns]
    assert s["normalized_returns"]["max"] == pytest.approx(max(expected))


def test_small_dataset_warns(minari_root):
    from mbrl_core.minari_writer import write_minari_dataset
    from workflows.embedded import collect_episodes

    write_minari_dataset(
        "test/planted/tiny-v0",
        collect_episodes(200, seed=2),
        env_id="InvertedPendulum-v5",
        ref_min_score=0.0,
        ref_max_score=1000.0,
        overwrite=True,
    )
    warnings = inspect_dataset("test/planted/tiny-v0").warnings
    assert len(warnings) == 1 and "only 200 transitions" in warnings[0]


def test_command_prints_table_json_and_writes_plot(planted_dataset_id, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    inspect_command.add_arguments(parser)
    plot = tmp_path / "report.png"
    assert inspect_command.run(parser.parse_args([planted_dataset_id, "--json", "--plot", str(plot)])) == 0
    printed = json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert printed["transitions"] == 3000 and printed["observations"][NAN_DIM]["non_finite"] == 1
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert inspect_command.run(parser.parse_args([planted_dataset_id])) == 0
    table = capsys.readouterr().out
    assert table.startswith("dataset        test/planted/problems-v0") and "warning: 1 actions outside" in table
    assert format_report(inspect_dataset(planted_dataset_id)) in table


def test_unknown_dataset_is_one_clear_error(minari_root):
    with pytest.raises(DatasetError, match="test/none/missing-v0"):
        inspect_dataset("test/none/missing-v0")
