"""The read-only status page in a real browser: headless Debian Chromium driven by
selenium, against real ``baton run`` replicas on the SQLite backend.

It asserts what a person would see: the leader's name, a job row, a failed run highlighted
(its CSS class and the computed colour), no secret from an exception message, a job name
holding markup shown as text; that the page refreshes in place (no reload) and follows a
handover; that it works with JavaScript disabled; and that it offers no write action. A
screenshot goes to the test's directory, and to docs/status-page.png (the README's) when
``BATON_UPDATE_SCREENSHOT=1`` is set: a test run leaves the tracked file alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.harness.process_server import free_port
from tests.harness.replicas import ROOT, Cluster, sqlite_cluster, wait_for
from tests.jobs.page import MARKUP_NAME, SECRET

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1000",
)
#: #fde8e8, the background of a failed run's row (scheduler/ops/http/page.py), as selenium
#: and as getComputedStyle spell it.
FAILED_ROW = "rgba(253, 232, 232, 1)"
FAILED_ROW_JS = "rgb(253, 232, 232)"
#: What a person sees, read in one script (atomic with respect to the page's refresh).
SNAPSHOT = """
const q = (s) => document.querySelector(s);
const text = (s) => { const e = q(s); return e ? e.innerText : ""; };
const failed = q('tr.job[data-job="page.failing"]');
const marked = q('tr.job[data-job="' + arguments[0] + '"]');
return {
  leader: text("#leader-name"),
  served: text("#served-by"),
  ok_row: text('tr.job[data-job="page.ok"]'),
  failed_class: failed ? failed.className : "",
  failed_bg: failed ? getComputedStyle(failed).backgroundColor : "",
  failed_runs: document.querySelectorAll("#runs tr.run.outcome-error").length,
  runs: document.querySelectorAll("#runs tr.run").length,
  marked: marked ? marked.innerText : "",
  marked_b: marked ? marked.querySelectorAll("code b").length : -1,
  paused: text("#paused"),
  controls: document.querySelectorAll("form, button, input").length,
  html: document.documentElement.outerHTML,
  body_class: document.body.className,
};
"""
#: Seconds for the replicas to start and run each job at least once.
READY_TIMEOUT = 30.0
#: Seconds for the page to show a change (it refreshes every 3 s).
PAGE_TIMEOUT = 20.0


def browser(profile: Path, javascript: bool = True) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, dict(answer.headers), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()
    except OSError:  # not listening yet
        return 0, {}, ""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with sqlite_cluster(tmp_path, "page", "tests.jobs.page") as c:
        yield c


def test_status_page_in_a_real_browser(cluster: Cluster, tmp_path: Path) -> None:
    """Leader, jobs, a highlighted failure, escaping, no secret; live refresh through a
    handover without a reload; the JavaScript-free view; read-only; a screenshot."""
    ports = {"r1": free_port(), "r2": free_port()}
    cluster.start_replica("r1", http_host="127.0.0.1", http_port=ports["r1"], lease_ttl=30)
    leader = cluster.wait_leader(READY_TIMEOUT)
    assert leader.replica_id == "r1"
    cluster.start_replica("r2", http_host="127.0.0.1", http_port=ports["r2"], lease_ttl=30)
    # Pause one job, as an operator would, so that the page has a pause to show.
    subprocess.run(
        [sys.executable, "-m", "scheduler", "pause", MARKUP_NAME,
         "--backend", cluster.backend_url, "--cluster", cluster.name,
         "--jobs", "tests.jobs.page"],
        cwd=ROOT, check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    page_url = f"http://127.0.0.1:{ports['r2']}/"  # a follower's page shows the cluster

    def failed_run_seen() -> bool:
        code, _, body = fetch(page_url)
        return code == 200 and "outcome-error" in body and "badge outcome-ok" in body

    wait_for(failed_run_seen, READY_TIMEOUT, "a failed and a good run on the page")

    code, headers, body = fetch(page_url)
    assert code == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "script-src 'sha256-" in headers["Content-Security-Policy"]
    assert SECRET not in body and "RuntimeError" in body
    assert "<form" not in body and "<button" not in body
    assert fetch(page_url, "POST")[0] == 405  # no write action, whatever the method

    driver = browser(tmp_path / "profile-js")
    try:
        driver.get(page_url)
        # One look in one script: the page swaps its <main> every few seconds, and an
        # element found before a swap is stale after it.
        seen = driver.execute_script(SNAPSHOT, MARKUP_NAME)
        assert seen["leader"] == "r1" and seen["served"] == "r2", seen
        assert "every 1s" in seen["ok_row"]
        assert "outcome-error" in seen["failed_class"]
        assert seen["failed_bg"] == FAILED_ROW_JS
        assert seen["failed_runs"] >= 1
        # A name holding markup is text: no <b> element was made of it.
        assert MARKUP_NAME in seen["marked"] and "paused" in seen["marked"]
        assert seen["marked_b"] == 0
        assert MARKUP_NAME in seen["paused"]
        assert SECRET not in seen["html"]
        assert seen["controls"] == 0  # no form, button or input
        wait_for(
            lambda: driver.execute_script(SNAPSHOT, MARKUP_NAME)["runs"] >= 8,
            PAGE_TIMEOUT,
            "a few runs in the history (for the screenshot)",
        )
        screenshot = tmp_path / "status-page.png"
        driver.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000, "an empty screenshot"
        if os.environ.get("BATON_UPDATE_SCREENSHOT") == "1":
            (ROOT / "docs").mkdir(exist_ok=True)
            shutil.copyfile(screenshot, ROOT / "docs" / "status-page.png")

        # Live: the page swaps its content in place (the marker survives: no reload) ...
        driver.execute_script(
            "window.__marker = 42; window.__first = document.querySelector('main');"
        )
        wait_for(
            lambda: driver.execute_script(
                "return document.querySelector('main') !== window.__first"
            ),
            PAGE_TIMEOUT,
            "the page to refresh its content",
        )
        assert driver.execute_script("return window.__marker") == 42
        assert "live" in driver.execute_script(SNAPSHOT, MARKUP_NAME)["body_class"]
        # ... and follows a handover: SIGTERM the leader, the same page shows r2 leading.
        cluster.replicas["r1"].signal(signal.SIGTERM)
        wait_for(
            lambda: driver.execute_script(SNAPSHOT, MARKUP_NAME)["leader"] == "r2",
            PAGE_TIMEOUT,
            "the page to show the new leader",
        )
        assert driver.execute_script("return window.__marker") == 42
        driver.save_screenshot(str(tmp_path / "status-page-after-handover.png"))
    finally:
        driver.quit()

    # Without JavaScript: the same server-rendered view, and a <meta refresh> fallback.
    plain = browser(tmp_path / "profile-nojs", javascript=False)
    try:
        plain.get(page_url)
        assert plain.find_element(By.ID, "leader-name").text == "r2"
        assert plain.find_element(By.CSS_SELECTOR, 'tr.job[data-job="page.ok"]')
        failed = plain.find_element(By.CSS_SELECTOR, 'tr.job[data-job="page.failing"]')
        assert failed.value_of_css_property("background-color") == FAILED_ROW
        assert "live" not in (plain.find_element(By.TAG_NAME, "body").get_attribute("class") or "")
        assert plain.find_elements(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')
        plain.save_screenshot(str(tmp_path / "status-page-no-js.png"))
    finally:
        plain.quit()
