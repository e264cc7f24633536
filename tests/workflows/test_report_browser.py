"""The comparison report from fabricated run folders (eval.json schema of workflows.runs), and in a real browser."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.workflows.fake_runs import fabricate_grid, fabricate_run
from workflows.report import score_of, summarize, terminal_summary, write_report
from workflows.report.stats import iqm, probability_of_improvement

# (algo, model based, final scores per seed): the numbers every assertion is checked against.
GRID = {
    "mopo": (True, [40.0, 60.0, 55.0]),
    "iql": (False, [50.0, 52.0, 48.0]),
}
DATASET = "toy/pendulum/mixed-v0"


@pytest.fixture
def compare_dir(tmp_path) -> Path:
    fabricate_grid(tmp_path, GRID, DATASET)
    return tmp_path


@pytest.fixture(autouse=True)
def empty_dynamics_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MBRL_DYNAMICS_STORE", str(tmp_path / "no-dynamics-here"))


def test_numbers_equal_the_eval_files(compare_dir):
    data = summarize(compare_dir, dynamics_store=str(compare_dir / "empty-store"))
    cells = {cell.algo: cell for cell in data.cells}
    for algo, (model_based, finals) in GRID.items():
        cell = cells[algo]
        assert cell.model_based == model_based
        assert cell.final_mean == pytest.approx(np.mean(finals))
        assert cell.final_std == pytest.approx(np.std(finals, ddof=1))
        assert cell.final_iqm.value == pytest.approx(iqm(finals))
        assert cell.final_iqm.low <= cell.final_iqm.value <= cell.final_iqm.high
        assert cell.best_mean == pytest.approx(np.mean(finals) + 10.0)
    # Model-free wall-clock is the runs' own; model-based rows add the dynamics pretraining,
    # here (no artifact to ask) the longest pretrain_seconds a run recorded.
    assert cells["iql"].wall_seconds == pytest.approx(101.0)
    assert cells["mopo"].wall_seconds == pytest.approx(101.0 + 30.0)
    assert cells["mopo"].updates_per_second == pytest.approx(np.mean([1000 / (100 + seed + 30) for seed in range(3)]))
    assert [d.key for d in data.dynamics] == ["toy-dynamics"] and data.dynamics[0].metrics is None


def test_model_based_vs_model_free_summary(compare_dir):
    data = summarize(compare_dir)
    text = terminal_summary(data)
    mopo, iql = GRID["mopo"][1], GRID["iql"][1]
    assert f"mopo {np.mean(mopo):.1f}" in text and f"iql {np.mean(iql):.1f}" in text
    (verdict,) = data.verdicts
    assert verdict.gap is not None and verdict.gap.value == pytest.approx(np.mean(mopo) - np.mean(iql))
    assert verdict.gap.low < 0 < verdict.gap.high  # three noisy seeds cannot separate these two
    assert f"{verdict.gap.value:+.1f} [{verdict.gap.low:+.1f}, {verdict.gap.high:+.1f}]" in text
    assert f"| {probability_of_improvement(mopo, iql):.2f} " in text and "| 3 vs 3 " in text
    assert "| no clear difference |" in text


def test_dataset_without_reference_scores_reports_raw_returns(tmp_path):
    for seed in range(2):
        fabricate_run(tmp_path, "bc", "custom/no-refs-v0", seed, False, 30.0 + seed, refs=False)
    data = summarize(tmp_path)
    assert data.normalized == {"custom/no-refs-v0": False}
    assert data.cells[0].final_mean == pytest.approx(10.0 * 30.5)  # return_mean, not the missing score
    assert "raw return (no reference scores)" in terminal_summary(data)


def test_unfinished_runs_are_listed_not_counted(compare_dir):
    unfinished = compare_dir / "runs" / "iql-toy_pendulum_mixed-v0-s3"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("algo: iql\n")
    data, paths = write_report(compare_dir)
    assert data.unfinished == [unfinished.name]
    assert len(next(cell for cell in data.cells if cell.algo == "iql").runs) == 3
    assert "Not finished (left out): iql-toy_pendulum_mixed-v0-s3" in paths.markdown.read_text()


def test_html_is_self_contained_with_decodable_plots(compare_dir):
    _, paths = write_report(compare_dir)
    page = paths.html.read_text()
    sources = re.findall(r"<img [^>]*src='([^']+)'", page)
    assert len(sources) == 1 and not re.search(r"(src|href)=['\"](?!data:)", page)
    png = base64.b64decode(sources[0].removeprefix("data:image/png;base64,"))
    assert png.startswith(b"\x89PNG") and png == paths.plots[0].read_bytes()
    assert "(plots/toy_pendulum_mixed-v0.png)" in paths.markdown.read_text()


def test_score_prefers_the_normalized_score():
    assert score_of({"normalized_score": 12.5, "return_mean": 900.0}) == 12.5
    assert score_of({"normalized_score": None, "return_mean": 900.0}) == 900.0


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def headless(*arguments: str, profile: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--hide-scrollbars",
    ]
    browser = chromium()
    assert browser is not None  # the test is skipped without one
    return subprocess.run([browser, *flags, *arguments], capture_output=True, text=True, timeout=90)


@pytest.mark.browser
@pytest.mark.skipif(chromium() is None, reason="needs chromium (apt-get install -y chromium)")
def test_report_renders_its_plots_in_a_headless_browser(compare_dir, tmp_path):
    from PIL import Image

    _, paths = write_report(compare_dir)
    url = paths.html.resolve().as_uri()
    dom = headless("--dump-dom", url, profile=tmp_path / "profile-dom").stdout
    assert "Results: toy/pendulum/mixed-v0 (normalized score)" in dom
    assert dom.count("<img") == 1 and "data:image/png;base64," in dom

    screenshot = tmp_path / "report.png"
    headless("--window-size=1280,1600", f"--screenshot={screenshot}", url, profile=tmp_path / "profile-shot")
    pixels = np.asarray(Image.open(screenshot).convert("RGB"), dtype=np.int16)
    # The tables are greys; only a decoded plot puts saturated colour (the learners' lines) on the page.
    saturation = pixels.max(axis=-1) - pixels.min(axis=-1)
    assert pixels.std() > 10, "blank screenshot"
    assert (saturation > 80).sum() > 2000, "no plot colours: the embedded PNG did not render"
