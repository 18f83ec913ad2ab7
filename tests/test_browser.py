"""What coordinators see in the Prefect UI, in a real browser.

A real ``prefect server start`` on loopback (its own PREFECT_HOME), the real ``roadmap`` command
run against it (sync the seed roadmap, then ``roadmap check``), and Debian's headless chromium
driven through the UI from the artifacts page to the latest matrix and summary artifacts.
Screenshots go to ``ROADMAP_SCREENSHOT_DIR`` (default: the test's tmp_path/screenshots).

Why selenium + chromedriver rather than chromium's ``--dump-dom``/``--screenshot`` with
``--virtual-time-budget``: the Prefect UI is a single-page app that fills each page from API
calls after load. Virtual time only bounds timers, not those real network round trips, so a
one-shot dump can capture a half-rendered page; with WebDriver we poll the rendered text until
it appears (bounded), click through the UI like a coordinator would, and take the screenshot of
the page we have just checked. Both binaries come from Debian (``chromium``, ``chromium-driver``);
nothing is downloaded: the driver path is given explicitly, so Selenium Manager never runs.

In CI (``CI`` set) a missing chromium, chromedriver or selenium is a failure; elsewhere a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
SEED_ROADMAP = ROOT / "roadmaps" / "gcm-arab-2024.yaml"
SLUG = "gcm-arab-2024"
AS_OF = "2024-06-05T09:00:00+02:00"
MATRIX_KEY = f"{SLUG}-matrix"
SUMMARY_KEY = f"{SLUG}-summary"
PROGRESS_KEY = f"{SLUG}-progress"

#: The matrix's first column: "<alpha-2> <English name>", sorted by code.
MEMBER_STATES = [
    "AE United Arab Emirates", "BH Bahrain", "DJ Djibouti", "DZ Algeria", "IQ Iraq", "JO Jordan",
    "KW Kuwait", "LB Lebanon", "LY Libya", "MR Mauritania", "QA Qatar", "SA Saudi Arabia",
    "SD Sudan", "SO Somalia", "TN Tunisia", "YE Yemen",
]

SERVER_START_TIMEOUT_S = 240
RENDER_TIMEOUT_S = 60
CHECK_TIMEOUT_S = 300
#: An empty UI shell (navigation and background only) measured ~49 kB here; the matrix and
#: summary pages ~270 kB and ~420 kB. Anything under this is not a rendered artifact page.
MIN_SCREENSHOT_BYTES = 60_000


def _unavailable(reason: str) -> None:
    """Fail in CI (the browser test must run there), skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"browser test cannot run in CI: {reason} (.ci/run installs Debian's chromium and chromium-driver)")
    pytest.skip(reason)


@dataclass(frozen=True)
class BrowserTools:
    chromium: str
    chromedriver: str


@pytest.fixture
def browser_tools() -> BrowserTools:
    """Debian's chromium and chromedriver, and selenium; checked before any server starts."""
    chromium = shutil.which("chromium")
    chromedriver = shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromedriver", chromedriver)) if not path]
    if missing:
        _unavailable(
            f"{' and '.join(missing)} not found on PATH; install with "
            "`apt-get install -y chromium chromium-driver`"
        )
    try:
        import selenium  # noqa: F401
    except ImportError as exc:
        _unavailable(f"selenium is not installed ({exc}); `pip install -e '.[test]'`")
    return BrowserTools(chromium, chromedriver)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _console_script(name: str, module_fallback: list[str]) -> list[str]:
    """The console script installed next to this interpreter, else the interpreter running the module."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, *module_fallback]


def _isolated_env(**extra: str) -> dict[str, str]:
    """This process's environment without any PREFECT_* or ROADMAP_* setting (the session's
    Prefect test server, a developer's profile), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ROADMAP_"))}
    env.update(extra)
    return env


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and everything it started (its own process group): TERM, then KILL."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass(frozen=True)
class UiServer:
    base: str  # http://127.0.0.1:<port>
    api: str  # <base>/api


@pytest.fixture
def ui_server(tmp_path, browser_tools) -> UiServer:
    """A real ``prefect server start`` on loopback with its own PREFECT_HOME, stopped at teardown."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    api = f"{base}/api"
    home = tmp_path / "prefect-server-home"
    home.mkdir()
    log_path = tmp_path / "prefect-server.log"
    env = _isolated_env(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # Without it the UI served on this port would call the API on :4200.
        PREFECT_UI_API_URL=api,
    )
    command = _console_script("prefect", ["-m", "prefect"]) + ["server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as a whole at teardown
        )
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"prefect server exited with status {proc.returncode} before it was healthy:\n{_tail(log_path)}")
                try:
                    with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"prefect server not healthy at {api}/health after {SERVER_START_TIMEOUT_S} s:\n{_tail(log_path)}")
                time.sleep(0.5)
            yield UiServer(base, api)
        finally:
            _stop(proc)


def _roadmap(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    command = _console_script("roadmap", ["-c", "from flows.cli import app; app()"]) + args
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)
    assert result.returncode == 0, f"`roadmap {' '.join(args)}` exited {result.returncode}:\n{result.stderr[-4000:]}"
    return result


def _latest_artifact_ids(api: str, keys: list[str]) -> dict[str, str]:
    """Key -> id of the latest version, read from the server's REST API."""
    body = json.dumps({"artifacts": {"key": {"any_": keys}}}).encode()
    request = urllib.request.Request(
        f"{api}/artifacts/latest/filter", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return {a["key"]: a["latest_id"] for a in json.load(response)}


def _chrome(tools: BrowserTools, profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = tools.chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1600,2400",
        "--lang=en-US",
        # Any host name but 127.0.0.1 fails to resolve: the page can reach nothing else.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=tools.chromedriver), options=options)
    driver.set_page_load_timeout(RENDER_TIMEOUT_S)
    driver.set_script_timeout(RENDER_TIMEOUT_S)
    return driver


def _body_text(driver) -> str:
    from selenium.common.exceptions import WebDriverException

    try:
        return driver.execute_script("return document.body ? document.body.innerText : ''") or ""
    except WebDriverException:
        return ""


class Missing(list):
    """What a condition still waits for (falsy when empty, but never a success)."""


def _wait_for(driver, what: str, condition, shots: Path, timeout_s: float = RENDER_TIMEOUT_S):
    """Poll ``condition(driver)`` until it returns a truthy value other than ``Missing`` (and
    return that value); on timeout save a screenshot and fail naming what is missing."""
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout_s
    outcome = None
    while time.monotonic() < deadline:
        try:
            outcome = condition(driver)
        except WebDriverException as exc:  # the SPA re-rendering under us
            outcome = Missing([type(exc).__name__])
        if outcome and not isinstance(outcome, Missing):
            return outcome
        time.sleep(0.5)
    failed = shots / f"FAILED-{what.replace(' ', '-')}.png"
    driver.save_screenshot(str(failed))
    pytest.fail(
        f"{what}: not rendered after {timeout_s} s at {driver.current_url}; missing: {outcome!r}; "
        f"screenshot {failed}; page text starts:\n{_body_text(driver)[:1500]}"
    )


def _missing_texts(*texts: str):
    def check(driver):
        body = _body_text(driver)
        return Missing(t for t in texts if t not in body) or True

    return check


def _link(href_part: str):
    from selenium.webdriver.common.by import By

    def find(driver):
        links = driver.find_elements(By.CSS_SELECTOR, f'a[href*="{href_part}"]')
        return links[0] if links and links[0].is_displayed() else None

    return find


def _xpath(expression: str):
    from selenium.webdriver.common.by import By

    def find(driver):
        found = [e for e in driver.find_elements(By.XPATH, expression) if e.is_displayed()]
        return found[0] if found else None

    return find


def _open_latest_version(driver, server: UiServer, key: str, artifact_id: str, shots: Path) -> None:
    """From the artifacts page, click the artifact's card, then its latest version on the key page."""
    _wait_for(driver, f"card of {key}", _link(f"/artifacts/key/{key}"), shots).click()
    _wait_for(driver, f"key page of {key}", lambda d: d.current_url == f"{server.base}/artifacts/key/{key}", shots)
    _wait_for(driver, f"latest version link of {key}", _link(f"/artifacts/artifact/{artifact_id}"), shots).click()
    _wait_for(driver, f"page of {key}", lambda d: d.current_url == f"{server.base}/artifacts/artifact/{artifact_id}", shots)


def _screenshot(driver, path: Path) -> Path:
    driver.execute_script("window.scrollTo(0, 0)")
    assert driver.save_screenshot(str(path)), f"chromium could not save {path}"
    return path


def test_artifacts_render_in_the_prefect_ui(tmp_path, browser_tools, ui_server):
    started = time.monotonic()
    shots = Path(os.environ.get("ROADMAP_SCREENSHOT_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)

    # The check, as CI and the nightly schedule run it: the real command against the real server.
    env = _isolated_env(
        PREFECT_HOME=str(tmp_path / "prefect-client-home"),
        PREFECT_API_URL=ui_server.api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        ROADMAP_DATABASE_URL=f"sqlite:///{tmp_path / 'roadmap.db'}",
        ROADMAP_OUTBOX_DIR=str(tmp_path / "outbox"),
    )
    _roadmap(["sync", str(SEED_ROADMAP)], env, tmp_path)
    result = json.loads(_roadmap(["check", "--as-of", AS_OF, "--json"], env, tmp_path).stdout)
    assert result["as_of"] == "2024-06-05T07:00:00+00:00"
    overdue = sorted(s["member_state"] for s in result["statuses"] if s["state"] == "overdue")
    assert overdue == sorted(label.split()[0] for label in MEMBER_STATES)  # invitations, for all 16
    assert result["reminders"]["failed"] == 0

    ids = _latest_artifact_ids(ui_server.api, [MATRIX_KEY, SUMMARY_KEY, PROGRESS_KEY])
    assert set(ids) == {MATRIX_KEY, SUMMARY_KEY, PROGRESS_KEY}, ids

    driver = _chrome(browser_tools, tmp_path / "chromium-profile")
    try:
        from selenium.webdriver.common.by import By

        # 1. The artifacts page lists this roadmap's artifacts (the check may publish more than these).
        driver.get(f"{ui_server.base}/artifacts")
        _wait_for(driver, "artifacts page", _missing_texts(MATRIX_KEY, SUMMARY_KEY, PROGRESS_KEY), shots)
        artifacts_png = _screenshot(driver, shots / "artifacts.png")
        driver.execute_script("window.roadmapSameDocument = true")  # gone if a click reloaded the page

        # 2. Matrix: card -> key page -> latest version; the table's first column is the 16 member states.
        _open_latest_version(driver, ui_server, MATRIX_KEY, ids[MATRIX_KEY], shots)
        _wait_for(driver, "matrix table", _missing_texts("16 Items", "member_state", "invitations", *MEMBER_STATES), shots)

        def first_column(d):
            # textContent, not .text: Selenium's .text is "" for a cell the table is still laying
            # out (seen once in CI: ['', 'BH Bahrain', ...]); an empty cell is polled again.
            cells = [(c.get_attribute("textContent") or "").strip()
                     for c in d.find_elements(By.CSS_SELECTOR, "table tbody tr td:first-child")]
            return cells if len(cells) == len(MEMBER_STATES) and all(cells) else Missing([f"16 rows, found {cells}"])

        assert _wait_for(driver, "matrix rows", first_column, shots) == MEMBER_STATES
        algeria = driver.find_element(By.XPATH, "//table//tr[td[1][normalize-space()='DZ Algeria']]").text
        assert "overdue by 3 working days · 2024-05-31" in algeria
        matrix_png = _screenshot(driver, shots / f"{MATRIX_KEY}.png")

        # 3. Summary: back to the artifacts page through the breadcrumbs, then the same way in.
        _wait_for(driver, "breadcrumb to the matrix key page", _link("/artifacts/key/" + MATRIX_KEY), shots).click()
        _wait_for(driver, "key page of the matrix", lambda d: d.current_url.endswith(f"/artifacts/key/{MATRIX_KEY}"), shots)
        _wait_for(driver, "breadcrumb Artifacts", _xpath("//a[normalize-space()='Artifacts']"), shots).click()
        _wait_for(driver, "artifacts page again", _missing_texts(SUMMARY_KEY), shots)
        _open_latest_version(driver, ui_server, SUMMARY_KEY, ids[SUMMARY_KEY], shots)
        _wait_for(driver, "summary", _missing_texts("Overdue (16)", "Due this week (0)", "Blocked (32)"), shots)

        def overdue_rows(d):
            rows = d.find_elements(By.XPATH, "//h2[normalize-space()='Overdue (16)']/following::table[1]//tbody/tr")
            texts = [" ".join(r.text.split()) for r in rows]
            # Every row drawn with its text: the table can have its 16 rows before their cells.
            complete = len(texts) == len(MEMBER_STATES) and all(texts)
            return texts if complete else Missing([f"16 rows with text, found {texts}"])

        rows = _wait_for(driver, "overdue rows of the summary", overdue_rows, shots)
        assert [r.split(" 2024-")[0] for r in rows] == [f"invitations {label}" for label in MEMBER_STATES]
        for label in ("DZ Algeria", "YE Yemen"):
            assert (
                f"invitations {label} 2024-05-31 23:59 Europe/Zurich overdue by 5 days (3 working days)" in rows
            ), rows
        summary_png = _screenshot(driver, shots / f"{SUMMARY_KEY}.png")

        # Everything the page loaded came from this server (one document: the UI navigated in-app).
        assert driver.execute_script("return window.roadmapSameDocument === true"), "a click reloaded the page"
        resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        elsewhere = [r for r in resources if not r.startswith((ui_server.base + "/", "data:", "blob:"))]
        assert not elsewhere, f"the UI requested other origins: {elsewhere}"
    finally:
        driver.quit()

    for png in (artifacts_png, matrix_png, summary_png):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
        assert len(data) > MIN_SCREENSHOT_BYTES, f"{png} is only {len(data)} bytes: not a rendered page"
    print(f"browser test: {time.monotonic() - started:.1f} s; screenshots in {shots}")
