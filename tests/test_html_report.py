"""`analyze --html`: one self-contained page per input, the web page of `serve` with everything inlined."""
from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from deepfake_detect.pipeline.cli import main
from deepfake_detect.pipeline.core.writers import output_stem


@pytest.fixture(scope="module")
def written(clips, weights_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("html")
    result = CliRunner().invoke(main, ["analyze", str(clips["one"]), "--out", str(out), "--html", "--render",
                                       "--weights", str(weights_dir), "--frames", "6"])
    assert result.exit_code in (0, 1, 3), result.output
    stem = output_stem(clips["one"].name)
    return out / f"{stem}.html", json.loads((out / f"{stem}.json").read_text())


def _embedded(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="embedded-job">(.*?)</script>', page, re.S)
    assert found, "no embedded job"
    return json.loads(found.group(1))


def test_the_page_holds_everything_and_loads_nothing(written):
    path, report = written
    page = path.read_text(encoding="utf-8")
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r'(src|href)="(https?:|/static/|/v1/)', page)     # nothing fetched, from anywhere
    job = _embedded(page)
    assert job["report"]["verdict"] == report["verdict"] and job["report"]["input"]["sha256"] == report["input"]["sha256"]
    kinds = {f["kind"] for f in job["files"]}
    assert "annotated_video" in kinds and any(k.startswith("keyframe_") for k in kinds)
    assert all(f["url"].startswith("data:") for f in job["files"])
    assert job["settings"]["render"]["html"] is True and job["limits"]
    assert report["outputs"]["html"].endswith(".html")


def test_html_needs_an_output_folder(clips):
    result = CliRunner().invoke(main, ["analyze", str(clips["photo"]), "--html"])
    assert result.exit_code == 2 and "--html needs --out" in result.output


def test_the_limits_line_is_the_model_cards_own(tmp_path):
    from deepfake_detect.pipeline.core.html_report import NO_CARD, model_card_line

    (tmp_path / "MODEL_CARD.md").write_text("# Card\n\n**In one line:** barely above\n**chance** on dev.\n\n## More\n")
    assert model_card_line(tmp_path)[0] == "Barely above chance on dev."
    assert model_card_line(tmp_path / "none")[0] == NO_CARD


def test_the_page_renders_offline_in_a_real_browser(written, tmp_path):
    browser_tests = pytest.importorskip("test_server_browser")
    if browser_tests.CHROMIUM is None or browser_tests.CHROMEDRIVER is None:
        pytest.skip("no chromium/chromedriver on PATH (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    path, report = written
    options = webdriver.ChromeOptions()
    options.binary_location = browser_tests.CHROMIUM
    # networking off: every host name fails to resolve, so the page can only show what it holds
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900",
                "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=browser_tests.CHROMEDRIVER), options=options)
    try:
        driver.get(path.as_uri())
        state = driver.execute_script(
            "return [document.body.dataset.mode, document.querySelector('#verdict').dataset.verdict,"
            " document.querySelectorAll('svg.timeline polyline.scores').length,"
            " [...document.querySelectorAll('#keyframes img')].filter(i => i.complete && i.naturalWidth > 0).length,"
            " document.querySelector('#provenance').textContent, document.querySelector('#about').textContent,"
            " document.querySelector('#upload').hidden]")
        mode, verdict, timelines, keyframes, provenance, about, upload_hidden = state
        assert (mode, verdict) == ("report", report["verdict"])
        assert timelines >= 1 and keyframes >= 1 and upload_hidden
        assert "absent" in provenance and report["input"]["sha256"] in about
        errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(max(900, height + 40), 8000))
        screenshot = tmp_path / "html-report.png"
        driver.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 20_000   # a page was drawn, not a blank one
    finally:
        driver.quit()


def test_a_video_past_the_page_budget_stays_beside_it_and_the_page_says_so(written, monkeypatch, weights_dir):
    from deepfake_detect.pipeline.core import html_report
    from deepfake_detect.pipeline.core.report import load_report

    path, _ = written
    monkeypatch.setattr(html_report, "PAGE_BUDGET", 1)
    page = html_report.render_html(load_report(path.with_suffix(".json")), {}, weights_dir)
    job = _embedded(page)
    assert "annotated_video" not in {f["kind"] for f in job["files"]}
    assert any("is not inlined" in w for w in job["report"]["warnings"])


def test_markup_in_names_and_metadata_cannot_break_the_page(written, weights_dir):
    from deepfake_detect.pipeline.core.html_report import render_html
    from deepfake_detect.pipeline.core.report import load_report

    path, _ = written
    report = load_report(path.with_suffix(".json"))
    report.input.path = "clip <!--<script>alert(1)</script> & more.mp4"
    page = render_html(report, {}, weights_dir)
    found = re.search(r'<script type="application/json" id="embedded-job">(.*?)</script>', page, re.S)
    assert found and "<" not in found.group(1) and "&" not in found.group(1)
    assert json.loads(found.group(1))["report"]["input"]["path"] == report.input.path


def test_a_page_that_cannot_be_written_does_not_stop_the_job(tmp_path, monkeypatch):
    from deepfake_detect.pipeline.core import lifecycle
    from deepfake_detect.pipeline.core.config import load_config
    from deepfake_detect.pipeline.core.report import AnalysisReport, InputInfo, load_report
    from deepfake_detect.pipeline.core.writers import CsvLogWriter

    def broken(*args, **kwargs):
        raise RuntimeError("template changed")

    monkeypatch.setattr(lifecycle, "render_html", broken)
    steps = lifecycle.JobLifecycle(lifecycle.Unrecorded(), CsvLogWriter(tmp_path / "results.csv"), html=load_config())
    report = AnalysisReport(input=InputInfo(path="x.jpg"), verdict="real", score=0.1)
    assert steps.complete(lifecycle.JobStep(1, tmp_path / "x.jpg.json"), report).kept
    written = load_report(tmp_path / "x.jpg.json")
    assert "html" not in written.outputs and any("HTML report not written" in w for w in written.warnings)
    assert (tmp_path / "results.csv").is_file()
