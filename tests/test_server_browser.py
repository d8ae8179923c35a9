"""The page of `deepfake-detect serve` in a real browser: headless Chromium driven by Selenium.

The real server runs as a subprocess (random-weight detector, 8 frames); the test uploads a clip
through the page's file input, as a person would, and checks what the page then shows: the verdict
banner, a person's score timeline with a plotted line, the keyframe and heatmap images (loaded),
a playable annotated video and the job in the recent list; then a text file's one-line error.
A screenshot of the finished page goes to the test's tmp dir (and to $SCREENSHOT_DIR when set).

Skipped only where no Chromium or chromedriver is installed (`.ci/run` installs Debian's). The
system driver and browser are named explicitly, so Selenium Manager never downloads anything.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from deepfake_detect.pipeline.bench.serve import free_loopback_port
from deepfake_detect.pipeline.core.samples import make_sample_video

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")) if p),
                None)
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="no chromium/chromedriver on PATH (apt-get install chromium chromium-driver)"),
]

ANALYSIS_TIMEOUT_S = 180
SERVER_START_TIMEOUT_S = 120
VERDICTS = {"real", "fake", "inconclusive", "no_face", "error"}


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def server(tmp_path: Path, weights_dir: Path) -> Iterator[SimpleNamespace]:
    """`deepfake-detect serve` on a free port; yields .url and .log_tail(), then stops it (SIGTERM, then kill)."""
    port = free_loopback_port()
    log_path = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "deepfake_detect.pipeline", "serve", "--data", str(tmp_path / "data"), "--port", str(port),
           "--weights", str(weights_dir), "--frames", "8"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])
    base = f"http://127.0.0.1:{port}"

    def log_tail() -> str:
        return log_path.read_text(errors="replace")[-3000:]

    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode} before serving:\n{log_tail()}")
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer /healthz within {SERVER_START_TIMEOUT_S} s:\n{log_tail()}")
            time.sleep(0.5)
        yield SimpleNamespace(url=base, log_tail=log_tail)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # belt and braces: Selenium Manager must never download

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--mute-audio",
                "--window-size=1280,900", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, timeout: float, what: str, on_fail=lambda: ""):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(condition)
    except TimeoutException:
        error = driver.execute_script("const e = document.querySelector('#error'); return e && !e.hidden ? e.textContent : ''")
        state = driver.execute_script("return document.body.dataset.state")
        status = driver.execute_script("return document.querySelector('#status-line').textContent")
        pytest.fail(f"timed out after {timeout} s waiting for {what}; page state {state!r}, status {status!r}, "
                    f"error {error!r}\n{on_fail()}")


def _screenshot(driver, tmp_path: Path, name: str) -> Path:
    """The whole page: the window is stretched to the document's height first."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(900, height + 40), 8000))
    path = tmp_path / name
    driver.save_screenshot(str(path))
    if os.environ.get("SCREENSHOT_DIR"):
        out = Path(os.environ["SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, out / name)
    return path


def test_page_uploads_a_clip_and_shows_the_analysis(server: SimpleNamespace, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver, base, log_tail = browser, server.url, server.log_tail
    clip = make_sample_video(tmp_path / "one face.mp4", seconds=2.0, size=(480, 270), faces=1)

    driver.get(f"{base}/")
    assert driver.title == "deepfake-detect"
    assert driver.find_element(By.CSS_SELECTOR, "#model-limits a[href='/v1/model-card']")

    # upload through the file input, as a person picking a file would
    driver.find_element(By.ID, "file-input").send_keys(str(clip))
    _wait(driver, lambda d: d.execute_script("return ['done', 'failed', 'error'].includes(document.body.dataset.state)"),
          ANALYSIS_TIMEOUT_S, "the analysis to finish", log_tail)
    state = driver.execute_script("return document.body.dataset.state")
    error = driver.find_element(By.ID, "error")
    assert state == "done", f"page state {state!r}: {error.text!r}"
    assert not error.is_displayed(), error.text
    assert driver.find_element(By.ID, "upload-progress").get_attribute("value") == driver.find_element(
        By.ID, "upload-progress").get_attribute("max")

    # the page shows what the server reports for this job
    job_id = driver.execute_script("return decodeURIComponent(location.hash.replace('#job=', ''))")
    job = _get_json(f"{base}/v1/jobs/{job_id}")
    report = job["report"]
    assert job["state"] == "done" and report is not None

    # the verdict banner, with the model's limits and the model card link
    banner = driver.find_element(By.ID, "verdict")
    assert banner.is_displayed()
    verdict = banner.get_attribute("data-verdict")
    assert verdict in VERDICTS and verdict == report["verdict"]
    assert driver.find_element(By.ID, "verdict-word").text.strip()
    if verdict not in ("no_face", "error"):
        assert f"score {report['score']:.2f}" in banner.text
        assert "% of analysed frames" in banner.text
    assert "model card" in banner.text
    assert banner.find_element(By.CSS_SELECTOR, "a[href='/v1/model-card']")
    assert verdict != "no_face", "the sample clip has a face: MTCNN should find it"

    # one row per person, each with a timeline: a plotted line, one point per face, the threshold
    rows = driver.find_elements(By.CSS_SELECTOR, "#tracks .track")
    assert len(rows) == len(report["tracks"]) >= 1
    for row, track in zip(rows, report["tracks"]):
        assert row.get_attribute("data-track-id") == str(track["id"])
        plot = row.find_element(By.CSS_SELECTOR, "svg.timeline")
        assert plot.is_displayed() and plot.size["width"] > 200 and plot.size["height"] > 80
        points = plot.find_element(By.CSS_SELECTOR, "polyline.scores").get_attribute("points").split()
        assert len(points) == len(track["faces"]) >= 2
        assert len(plot.find_elements(By.CSS_SELECTOR, "circle.point")) == len(track["faces"])
        assert plot.find_element(By.CSS_SELECTOR, "line.threshold").get_attribute("stroke-dasharray")
        box = driver.execute_script("return arguments[0].querySelector('polyline.scores').getBBox().width", plot)
        assert box > 50, "the line spans the clip's time axis"

    # keyframes and heatmap panels: every image loaded
    def all_loaded(selector: str):
        return lambda d: d.execute_script(
            "const imgs = [...document.querySelectorAll(arguments[0])];"
            "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0) ? imgs.length : false", selector)

    n_keyframes = _wait(driver, all_loaded("#keyframes img"), 30, "the keyframe images to load", log_tail)
    assert n_keyframes == len(report["keyframes"]) >= 1
    _wait(driver, all_loaded("#heatmaps img"), 30, "the heatmap panels to load", log_tail)

    # the annotated video plays: metadata loads and it has a duration
    _wait(driver, lambda d: d.execute_script(
        "const v = document.querySelector('#player video'); return !!v && !v.error && v.readyState >= 1 && v.duration > 0"),
        30, "the annotated video to load", log_tail)
    media_error = driver.execute_script("const v = document.querySelector('#player video'); return v.error && v.error.code")
    assert not media_error
    duration = driver.execute_script("return document.querySelector('#player video').duration")
    assert duration == pytest.approx(2.0, abs=0.3)

    # the report to download, and the job in the recent list
    assert driver.find_element(By.CSS_SELECTOR, "#downloads a.report-download").get_attribute("href")
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f"#jobs li[data-job-id='{job_id}']"), 15,
          "the job in the recent list")

    shot = _screenshot(driver, tmp_path, "serve_page.png")
    assert shot.stat().st_size > 10_000

    # no script errors on the page
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE" and e.get("source") == "javascript"]
    assert not errors, errors

    # a file that is not media gets a one-line error, and no result
    driver.set_window_size(1280, 900)
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n")
    driver.find_element(By.ID, "file-input").send_keys(str(text))
    _wait(driver, lambda d: d.execute_script("return ['failed', 'error'].includes(document.body.dataset.state)"), 60,
          "the error for a text file", log_tail)
    line = driver.find_element(By.ID, "error")
    assert line.is_displayed() and line.text.strip() and "\n" not in line.text.strip()
    assert not driver.find_element(By.ID, "result").is_displayed() or \
        driver.find_element(By.ID, "verdict").get_attribute("data-verdict") == "error"
