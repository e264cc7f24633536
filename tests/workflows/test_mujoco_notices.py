"""MuJoCo's notices about Gymnasium's own model files stay off the user's terminal; its other warnings do not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mbrl_core.evaluation import _forward_mujoco_warning

REPOSITORY = Path(__file__).resolve().parents[2]
MAKE_CHEETAH = "import gymnasium as gym; gym.make('HalfCheetah-v5').close(); print('made')"


def run_fresh(code: str, cwd) -> str:
    """Output of ``code`` in a new interpreter: MuJoCo prints each notice once per process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return result.stdout + result.stderr


def test_creating_an_env_through_collect_prints_no_settotalmass_notice(tmp_path):
    if "settotalmass" not in run_fresh(MAKE_CHEETAH, tmp_path):
        pytest.skip("this MuJoCo version no longer prints the notice")
    (tmp_path / "MUJOCO_LOG.TXT").unlink()
    quiet = run_fresh(
        "from workflows.collect.environment import make_env; make_env('HalfCheetah-v5').close(); print('made')",
        tmp_path,
    )
    assert quiet.strip() == "made"
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


def test_other_mujoco_warnings_still_reach_the_user():
    with pytest.warns(RuntimeWarning, match="MuJoCo: Nan, Inf or huge value in QACC"):
        _forward_mujoco_warning("Nan, Inf or huge value in QACC at DOF 0. The simulation is unstable.")
    _forward_mujoco_warning("compiler attribute 'settotalmass' is deprecated and will be removed")  # no warning
