"""What users look at, in a real browser (Debian's headless Chromium through Selenium), after a
small real search of two spaces: the Optuna dashboard, the MLflow runs link that ``make mlflow``
prints, and the ``make report`` page.

Skipped when Chromium, ChromeDriver or Selenium is missing; a failure instead when
REQUIRE_BROWSER=1 (CI, whose .ci/run installs them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest

from conftest import REPO, free_port, serving
from imgsearch.ranking import best_trial
from imgsearch.trials.describe import key_params
from imgsearch.storage.compat import study_id

pytestmark = pytest.mark.xdist_group("browser")  # one test process: the searches and the browser, once
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Unpruned, so that every trial completes and each study has its parameter-importance plot (two
# complete trials): at 2 epochs hyperband prunes a trial whose first epoch is worse than all before it.
STUDIES = {"digits-mlp": ["--space", "mlp", "--trials", "3"], "digits-cnn": ["--space", "cnn", "--trials", "2"]}
COMMON = ["--dataset", "digits", "--epochs", "2", "--pruner", "none"]


@pytest.fixture(scope="module")
def browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = f"no {', '.join(missing)} (Debian: apt-get install chromium chromium-driver)"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=2400,1200"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> dict:
    """A RUNS_DIR holding two finished digits studies (mlp, cnn), searched by the real CLI, the
    mlp one resumed for one more trial pruned as too slow (a reason to group); MLFLOW_PORT is
    where the dashboard's notes link to."""
    from imgsearch.command_line.main import main
    from imgsearch.settings import SETTINGS

    root = tmp_path_factory.mktemp("browser")
    env = {"RUNS_DIR": str(root / "runs"), "DATA_DIR": str(root / "data"), "MLFLOW_PORT": str(free_port())}
    with pytest.MonkeyPatch.context() as patch:  # in this process: the searches' process is not the point
        for setting in SETTINGS:
            patch.delenv(setting.env, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        for args in [*STUDIES.values(), [*STUDIES["digits-mlp"][:-1], "4", "--max-epoch-seconds", "0.001"]]:
            assert main(["search", *COMMON, *args]) == 0
    return env


def wait_for_text(browser, *texts: str) -> str:
    """The page's text once it holds every one of ``texts`` (a single-page app renders late)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    body = lambda driver: driver.find_element(By.TAG_NAME, "body").text  # noqa: E731
    WebDriverWait(browser, 30).until(lambda driver: all(text in body(driver) for text in texts))
    return body(browser)


def clickable(browser, xpath: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, 30).until(expected_conditions.element_to_be_clickable((By.XPATH, xpath)))


def load(runs_dir: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{runs_dir}/optuna.db")


def test_the_optuna_dashboard_shows_the_studies_their_trials_notes_and_artifacts(browser, searched, tmp_path):
    """Each trial's note says how it ended and links to its MLflow run, which opens; its learning
    curves and model summary are listed as its artifacts."""
    from selenium.webdriver.common.by import By

    port = free_port()
    with serving("dashboard", port, {**searched, "DASHBOARD_PORT": str(port)}, tmp_path / "dashboard.log"):
        browser.get(f"http://127.0.0.1:{port}/dashboard")
        wait_for_text(browser, *STUDIES)
        study = load(searched["RUNS_DIR"], "digits-mlp")
        browser.get(f"http://127.0.0.1:{port}/dashboard/studies/{study_id(study)}/trials")
        best = best_trial(study)
        text = wait_for_text(browser, f"{len(study.trials)} Trials", *(f"Trial {t.number}" for t in study.trials))
        assert f"Trial {best.number}\nComplete\nBest Trial" in text  # the trial list marks the same best
        first = study.trials[0]
        text = wait_for_text(browser, f"complete: val_accuracy {first.value:.4f}", "learning_curves.png",
                             "model_summary.txt")
        assert "after 2 epochs" in text
        link = browser.find_element(By.PARTIAL_LINK_TEXT, f"MLflow run of trial {first.number}").get_attribute("href")
    run_id = first.user_attrs["mlflow_run_id"]
    assert link.startswith(f"http://127.0.0.1:{searched['MLFLOW_PORT']}/#/experiments/") and link.endswith(run_id)
    port = int(searched["MLFLOW_PORT"])
    with serving("mlflow", port, searched, tmp_path / "mlflow.log", ready="runs of digits-mlp: "):
        browser.get(link)
        wait_for_text(browser, f"trial-{first.number} complete", "val_accuracy")


def test_the_mlflow_link_shows_the_trial_runs_in_the_studys_order_with_the_objective(browser, searched, tmp_path):
    port = free_port()
    log = tmp_path / "mlflow.log"
    with serving("mlflow", port, {**searched, "MLFLOW_PORT": str(port)}, log, ready="runs of digits-mlp: "):
        link = re.search(r"runs of digits-mlp: (\S+)", log.read_text()).group(1)
        browser.get(link)
        wait_for_text(browser, "trial-", "Columns")
        # MLflow shows metric columns once chosen, as a user does: Columns, then objective.
        clickable(browser, "//button[.//*[text()='Columns'] or text()='Columns']").click()
        clickable(browser, "//input[contains(@placeholder, 'Search')]").send_keys("objective")
        clickable(browser, "//strong[text()='objective']").click()
        study = load(searched["RUNS_DIR"], "digits-mlp")
        text = wait_for_text(browser, repr(best_trial(study).value))  # the column's cells
    complete = sorted((t for t in study.trials if t.state.name == "COMPLETE"),
                      key=lambda t: (-t.value, t.datetime_complete))
    shown = [int(n) for n in re.findall(r"trial-(\d+) complete", text)]
    # The study's order; trials of equal value (MLflow cannot know which completed first) in any order.
    assert sorted(shown) == sorted(t.number for t in complete)
    assert [study.trials[n].value for n in shown] == [t.value for t in complete]
    for trial in complete:
        assert repr(trial.value) in text or f"{trial.value:.4f}" in text


def test_the_report_renders_every_image_and_the_studys_numbers(browser, searched, tmp_path):
    from selenium.webdriver.common.by import By

    out = tmp_path / "report.html"
    done = subprocess.run(["make", "--no-print-directory", "report"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **searched, "REPORT": str(out)}, timeout=300)
    assert done.returncode == 0 and "report of 2 studies" in done.stdout, done.stderr[-3000:]
    browser.get(out.as_uri())
    images = browser.find_elements(By.TAG_NAME, "img")
    missing = [p.text for p in browser.find_elements(By.CSS_SELECTOR, "p.none")]
    assert len(images) == 1 + 2 * len(STUDIES), missing  # best so far; curves and confusion per study
    few = [p.text for p in browser.find_elements(By.CSS_SELECTOR, "p.few")]
    assert len(few) == len(STUDIES) and all("too few to rank the parameters" in line for line in few)
    assert all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
               for img in images)
    for name in STUDIES:
        study = load(searched["RUNS_DIR"], name)
        best = best_trial(study)

        def cell(field):
            return browser.find_element(By.CSS_SELECTOR, f"td[data-study='{name}'][data-field='{field}']").text

        assert cell("best_value") == f"{best.value:.4f}" and cell("best_trial") == str(best.number)
        for state, field in (("COMPLETE", "complete"), ("PRUNED", "pruned"), ("FAIL", "failed")):
            assert cell(field) == str(sum(t.state.name == state for t in study.trials))
        evaluation = json.loads((Path(searched["RUNS_DIR"]) / "exports" / name / "evaluation.json").read_text())
        assert cell("test_top1") == f"{evaluation['top1']:.4f}" and cell("test_top5") == f"{evaluation['top5']:.4f}"
        for key, value in (("dataset", "digits"), ("epochs", "2"), ("pruner", "none"), ("classes", "10"),
                           ("test_images", str(evaluation["n_test"]))):
            assert cell(f"setting_{key}") == value
        span = lambda field: browser.find_element(  # noqa: E731
            By.CSS_SELECTOR, f"span[data-study='{name}'][data-field='{field}']").text
        assert span("winner_trial") == str(best.number) and span("winner_model") == key_params(best)
        rows = browser.find_elements(By.CSS_SELECTOR, f"table.top tr[data-study='{name}']")
        finished = [t for t in study.trials if t.state.is_finished()]
        assert len(rows) == len(finished) and rows[0].get_attribute("data-trial") == str(best.number)
        assert f"{evaluation['top1']:.4f}" in rows[0].text  # the exported trial's row has its test scores
    reasons = browser.find_elements(By.CSS_SELECTOR, "tr[data-study='digits-mlp'][data-reason]")
    assert [(r.get_attribute("data-reason"), r.find_elements(By.TAG_NAME, "td")[2].text) for r in reasons] == [
        ("too slow", "1")]


def test_one_report_shows_the_studies_of_two_runs_folders(browser, searched, tmp_path):
    from selenium.webdriver.common.by import By

    other = tmp_path / "other-runs"
    shutil.copytree(searched["RUNS_DIR"], other)  # a second folder whose studies have the same names
    out = tmp_path / "both.html"
    done = subprocess.run(["make", "--no-print-directory", "report"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **searched, "RUNS_DIRS": str(other), "REPORT": str(out)}, timeout=300)
    assert done.returncode == 0 and "report of 4 studies" in done.stdout, done.stderr[-3000:]
    browser.get(out.as_uri())
    for root in (searched["RUNS_DIR"], str(other)):
        for name in STUDIES:
            best = best_trial(load(searched["RUNS_DIR"], name))
            cell = browser.find_element(By.CSS_SELECTOR, f"td[data-study='{root}: {name}'][data-field='best_value']")
            assert cell.text == f"{best.value:.4f}"
