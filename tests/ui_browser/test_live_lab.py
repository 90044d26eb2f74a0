"""The live notebook in a real browser: JupyterLab as `make lab` starts it (token auth),
Debian's chromium driven by Playwright. Run all cells, start the ETL and push from
their buttons, see the charts move, shut the kernel down, and find no process left.

Screenshots go to outputs/browser/ (the README's picture is one of them).
"""

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import time
import urllib.request

import pytest

from ridematch_nb.config import PROJECT_ROOT
from ridematch_nb.ports import free_port
from ridematch_nb.process import wait_until_answering
from ridematch_nb.stack.lab import lab_command
from tests.integration.test_live import LIVE_TOPIC, gone_within, live_env, live_processes

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = PROJECT_ROOT / "outputs" / "browser"
TOPIC = f"{LIVE_TOPIC}-browser"
# JupyterLab's own settings for this test: no news or update checks over the network
QUIET_LAB = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    }
}


def lab_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def shrink(path, **values) -> None:
    """Set parameters in the notebook's parameters cell, as papermill's -p would: a
    smaller world keeps a 2-core machine (browser, server, kernel, stack) responsive."""
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    lines = []
    for line in "".join(cell["source"]).splitlines():
        name = line.split(":")[0]
        lines.append(
            f"{name}: {type(values[name]).__name__} = {values[name]!r}" if name in values else line
        )
    assert all(any(line.startswith(f"{n}:") for line in lines) for n in values)
    cell["source"] = "\n".join(lines)
    path.write_text(json.dumps(nb))


@pytest.fixture
def lab(stack, tmp_path):
    """JupyterLab on a copy of the notebooks (its autosave never touches the repository),
    with the test profile and a topic of its own in the kernel's environment."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run `make install` (scripts/system-deps.sh)")
    root = tmp_path / "root"
    shutil.copytree(PROJECT_ROOT / "notebooks", root / "notebooks")
    shrink(
        root / "notebooks" / "watch_live.ipynb",
        n_drivers=200,
        refresh_s=2.0,
        etl_group="ridematch-etl-live-browser",  # the tests' groups stay undisturbed
        push_group="ridematch-online-push-live-browser",
    )
    settings_dir = tmp_path / "lab-settings"
    for name, values in QUIET_LAB.items():
        (settings_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (settings_dir / name).write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    env = live_env(TOPIC) | {
        "JUPYTERLAB_SETTINGS_DIR": str(settings_dir),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    log = open(tmp_path / "lab.log", "wb")  # noqa: SIM115 (open while the server runs)
    proc = subprocess.Popen(
        lab_command(root, port=port, token=token, open_browser=False),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(
            lambda: lab_answers(f"{base}/api/status?token={token}"),
            proc.poll,
            "JupyterLab",
            lambda: (tmp_path / "lab.log").read_text(errors="replace")[-1500:],
        )
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        for leftover in live_processes(TOPIC):  # only after a failure above
            leftover.kill()


def running_commands() -> set[str]:
    """The package commands the live notebook runs for this test's topic."""
    return {" ".join(p.cmdline()).split("--tied-to")[1].split()[1] for p in live_processes(TOPIC)}


def wait_all_cells_ran(page, timeout_s: float = 180) -> list[str]:
    """Every code cell has run: each prompt shows its execution count, none a star."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        prompts = [p.strip() for p in page.locator(".jp-InputArea-prompt").all_inner_texts()]
        counts = [p for p in prompts if p]
        if counts and all(re.fullmatch(r"\[\d+\]:", p) for p in counts):
            return counts
        time.sleep(0.5)
    raise TimeoutError(f"cells still running or not run: {prompts}")


def test_live_notebook_runs_in_jupyterlab_moves_and_stops_with_its_kernel(lab, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    base, token = lab
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh profile every run
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1500, "height": 1300},
        )
        page = browser.pages[0] if browser.pages else browser.new_page()
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        try:
            # a wrong token is refused: the server asks for it
            page.goto(f"{base}/lab/tree/notebooks/watch_live.ipynb?token=wrong")
            page.wait_for_selector("input[type=password]", timeout=60_000)
            page.goto(f"{base}/lab/tree/notebooks/watch_live.ipynb?token={token}")
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
            choose = page.get_by_role("button", name="Select", exact=True)
            with contextlib.suppress(PlaywrightTimeout):  # a fresh workspace may ask
                choose.click(timeout=10_000)
            page.wait_for_selector(
                ".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000
            )

            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            charts = page.locator(".jupyter-matplotlib canvas").first  # the ipympl figure
            charts.wait_for(timeout=180_000)
            wait_all_cells_ran(page)
            for button, command in (
                ("", "generate"),  # started by the notebook; the others wait for a button
                ("ETL worker", "etl"),
                ("push-online", "push-online"),
            ):
                if button:
                    page.get_by_role("button", name=button).click()
                deadline = time.monotonic() + 180
                while command not in running_commands() and time.monotonic() < deadline:
                    time.sleep(0.5)
                assert command in running_commands(), f"{button} started nothing"
            page.screenshot(path=str(SHOTS / "live-buttons.png"))
            time.sleep(12)  # the push loop joins its group and the charts fill
            dashboard = page.locator(".widget-vbox").first
            dashboard.scroll_into_view_if_needed()
            first = charts.screenshot()
            page.screenshot(path=str(SHOTS / "live-1.png"), full_page=False)
            time.sleep(4)
            second = charts.screenshot()
            page.screenshot(path=str(SHOTS / "live-2.png"), full_page=False)
            dashboard.screenshot(path=str(SHOTS / "live-dashboard.png"))
            assert first != second, "the charts did not change in 4 s"
            seen = page.get_by_text("seen since start").inner_text()
            assert "driver_update" in seen, seen  # the stream reached the dashboard

            errors = page.locator("[data-mime-type='application/vnd.jupyter.error']")
            assert errors.count() == 0, errors.first.inner_text()
            assert len(wait_all_cells_ran(page)) == 6  # every code cell ran once

            page.get_by_role("menuitem", name="Kernel", exact=True).click()
            page.get_by_role("menuitem", name="Shut Down Kernel", exact=True).click()
            assert gone_within(TOPIC, 30) == [], "processes outlived the kernel"
        except Exception:
            page.screenshot(path=str(SHOTS / "failure.png"))
            (SHOTS / "failure-console.txt").write_text("\n".join(console))
            raise
        finally:
            browser.close()
