"""The sweep's plots as the Prefect UI really shows them: a real server with its UI, a real headless browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_hpo import Budget, Categorical, Float, Int, SqlTrialStore, SweepResult, sweep, wait_for_plots
from prefect_hpo.trial import Trial

pytestmark = pytest.mark.prefect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# the flags this machine's closed network needs (no background fetches, no QUIC), as root in a sandbox
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,2400",
    "--virtual-time-budget=20000",  # let the single-page app fetch the artifact and render it
]


@pytest.fixture(scope="module")
def browser(ui_server: str) -> str:
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            raise RuntimeError("chromium must be installed under CI (scripts/browser.sh installs it)")
        pytest.skip("no chromium: install it (apt-get install chromium) to check the UI")
    return CHROMIUM


def curve(config: dict[str, Any], trial: Trial) -> None:
    for epoch in range(1, 10):
        trial.report(epoch, loss=config["x"] + 1.0 / epoch + 0.05 * config["n"] + (0.1 if config["a"] == "p" else 0.0))


def browse(url: str, user_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Open `url` in headless Chromium with a fresh profile; `args` ask for a DOM dump or a screenshot."""
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={user_dir}", *args, url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.fixture(scope="module")
def ui_sweep(ui_server: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[SweepResult, Path]:
    """A sweep run against the UI server: its result and its store's folder."""
    folder = tmp_path_factory.mktemp("ui-sweep")
    with temporary_settings({PREFECT_API_URL: ui_server}):
        result = sweep(
            curve,
            {"x": Float(0.0, 1.0), "n": Int(1, 5), "a": Categorical(["p", "q"])},
            "loss",
            "random",
            Budget(max_trials=12, max_concurrent=2),
            storage=f"sqlite:///{folder / 'hpo.db'}",
            name="UI Plots",
            seed=2,
            workers="threads",
        )
        assert wait_for_plots(timeout=120)
    return result, folder


def test_the_ui_shows_the_sweeps_plots(
    ui_server: str, browser: str, ui_sweep: tuple[SweepResult, Path], tmp_path: Path
) -> None:
    result, folder = ui_sweep
    with temporary_settings({PREFECT_API_URL: ui_server}), get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["ui-plots-plots"]))
        )
    # the PNGs lie next to the store
    plots = folder / "plots" / "ui-plots"
    assert sorted(p.name for p in plots.iterdir()) == ["curves.png", "history.png", "importance.png", "parallel.png"]
    assert len(result.records) == 12

    page = ui_server.removesuffix("/api") + f"/artifacts/artifact/{artifact.id}"
    dom = browse(page, tmp_path / "chromium-dom", "--dump-dom").stdout
    # the UI's markdown renderer kept every embedded plot as an image (it did not sanitize it away)
    assert dom.count('src="data:image/png;base64,') == 4, dom[-3000:]
    for title in ("Optimization history", "Parameter importance", "Parallel coordinates", "Training curves"):
        assert title in dom

    shot = tmp_path / "artifact.png"
    browse(page, tmp_path / "chromium-shot", f"--screenshot={shot}")
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    white = (pixels.min(axis=2) > 0.95).mean()
    # the UI is dark; the plots are drawn on white: a page that shows them is largely white
    assert white > 0.15, f"only {white:.1%} of the screenshot is white: the plots are not on screen ({shot})"


def test_the_flow_run_page_leads_to_the_summary_table_and_the_best_configuration(
    ui_server: str, browser: str, ui_sweep: tuple[SweepResult, Path], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    result, folder = ui_sweep
    store = SqlTrialStore(f"sqlite:///{folder / 'hpo.db'}")
    flow_run_id = store.sweep(store.sweep_id("UI Plots"))["flow_run_id"]
    store.close()
    best = result.best_trial
    assert best is not None
    ui = ui_server.removesuffix("/api")
    flags = [f for f in CHROMIUM_FLAGS if not f.startswith(("--headless", "--window-size", "--virtual-time"))]
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=browser, args=flags)
        try:
            page = chromium.new_page(viewport={"width": 1280, "height": 1600})
            page.set_default_timeout(30_000)
            page.goto(f"{ui}/runs/flow-run/{flow_run_id}")
            page.get_by_text("Artifacts", exact=True).first.click()  # the flow run page's Artifacts tab
            for key in ("ui-plots-summary", "ui-plots-best", "ui-plots-budget", "ui-plots-progress", "ui-plots-plots"):
                page.get_by_text(key, exact=True).first.wait_for()
            page.screenshot(path=tmp_path / "flow-run-artifacts.png", full_page=True)

            page.get_by_text("ui-plots-summary", exact=True).first.click()
            table = page.locator("table").first
            table.wait_for()
            first_row = table.locator("tbody tr").first.inner_text()
            assert first_row.split()[:2] == [str(best.number), "COMPLETE"]  # best first
            assert table.locator("tbody tr").count() == 12
            page.screenshot(path=tmp_path / "summary.png", full_page=True)

            page.go_back()
            page.get_by_text("Artifacts", exact=True).first.click()
            page.get_by_text("ui-plots-best", exact=True).first.click()
            page.get_by_text(f"Trial {best.number}, loss =").wait_for()
            code = page.locator("code").first.inner_text()
            assert json.loads(code) == best.config  # the copyable JSON block shows the best configuration
        finally:
            chromium.close()
