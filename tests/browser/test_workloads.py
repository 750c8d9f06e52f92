"""The workload journeys of round 2, as a user walks them in Chromium, on the local backend
(engines, experiment runs and model replicas are real processes): a session with console
outputs (text, a matplotlib plot, an error), a terminal, stopping it and reading its log; two
experiment runs compared by their metrics; a model deployed, called from its test form, and its
counts rising on the monitoring page."""

from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import Page, expect

from .conftest import VIEWPORT, Console, Server, screenshot, sign_in
from .test_journeys import new_project, write_file

pytestmark = pytest.mark.timeout(600)
ENGINE_START_MS = 120000  # an engine process with jupyter_server on a busy 2-core machine


def run_in_console(page: Page, code: str) -> None:
    prompt = page.get_by_label("Console input")
    prompt.fill(code)
    prompt.press("Enter")


def test_session_console_plot_terminal_and_log(page: Page, browser: object, server: Server) -> None:
    sign_in(page, "alice")
    pid = new_project(page)
    page.goto("/projects/%d/sessions" % pid)
    expect(page.locator("#sessions")).to_contain_text("No sessions yet")
    page.get_by_label("Kernel").select_option("python3")
    page.get_by_role("button", name="Start Session").click()
    page.wait_for_url(re.compile(r"/sessions/\d+$"))
    sid = int(page.url.rsplit("/", 1)[1])
    screenshot(page, "session-starting")
    expect(page.locator("#session-status")).to_contain_text("running", timeout=ENGINE_START_MS)
    expect(page.locator(".CodeMirror")).to_contain_text("import math")  # analysis.py opened

    run_in_console(page, "print(1+1)")
    last = page.locator("#console-output .cell").last
    expect(last.locator("pre.in")).to_have_text("print(1+1)")
    expect(last.locator("pre.out-stdout")).to_have_text("2")

    run_in_console(page, "import matplotlib.pyplot as plt; plt.plot([1, 4, 9, 16]); plt.title('squares'); plt.show()")
    plot = page.locator("#console-output .cell").last.locator("img.out-image")
    expect(plot).to_be_visible(timeout=60000)
    assert (plot.get_attribute("src") or "").startswith("data:image/png;base64,")
    assert plot.evaluate("img => img.naturalWidth") > 100  # a real picture, decoded

    # HTML (a table) renders in a sandboxed frame: no scripts, the page's CSP inherited
    run_in_console(page, "from IPython.display import HTML; display(HTML('<table><tr><th>k</th><td>cell-42</td></tr></table>'))")
    frame = page.locator("#console-output .cell").last.locator("iframe.out-html")
    expect(frame).to_have_attribute("sandbox", "allow-same-origin")
    expect(page.frame_locator("#console-output .cell:last-child iframe.out-html").locator("td")).to_have_text("cell-42")

    run_in_console(page, "1/0")
    error = page.locator("#console-output .cell").last.locator("pre.out-error")
    expect(error).to_contain_text("ZeroDivisionError")
    assert "\x1b[" not in (error.text_content() or "")  # ANSI colours rendered, not shown raw

    # the whole file from the editor: its text and its plot, in order
    page.get_by_role("button", name="Run File").click()
    cell = page.locator("#console-output .cell").last
    expect(cell.locator("pre.out-stdout").first).to_contain_text("first rows:", timeout=60000)
    expect(cell.locator("img.out-image")).to_be_visible(timeout=60000)
    screenshot(page, "workbench")

    page.get_by_role("tab", name="Terminal").click()
    expect(page.locator("#terminal")).to_have_attribute("data-connected", "yes", timeout=30000)
    page.locator("#terminal").click()
    page.keyboard.type("echo hello-$((6*7))")
    page.keyboard.press("Enter")
    expect(page.locator("#terminal .xterm-rows")).to_contain_text("hello-42", timeout=20000)
    screenshot(page, "terminal")

    # the owner shares the console to view only: another user reads it, cannot run code
    page.get_by_role("tab", name="Console").click()
    page.locator("#sharing summary").click()
    page.get_by_label("Share with").fill("admin")
    page.locator("#sharing select[name=mode]").select_option("view")
    page.locator("#sharing").get_by_role("button", name="Share", exact=True).click()
    expect(page.locator('#shares tr[data-user="admin"]')).to_contain_text("view only")
    other = browser.new_context(base_url=server.url, viewport=VIEWPORT)  # type: ignore[attr-defined]
    try:
        viewer = other.new_page()
        sign_in(viewer, "admin")
        viewer.goto(page.url)
        expect(viewer.locator("#console-output pre.out-stdout").first).to_have_text("2")
        expect(viewer.get_by_label("Console input")).to_have_count(0)
        expect(viewer.get_by_role("button", name="Run File")).to_have_count(0)
    finally:
        other.close()
    page.locator('#shares tr[data-user="admin"]').get_by_role("button", name="Revoke").click()
    expect(page.locator("#shares")).to_contain_text("Not shared with anyone")
    page.locator("#sharing summary").click()

    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Stop").click()
    # the page reflects Stop at once ("stopping" while the engine goes, then "stopped")
    expect(page.locator("#session-status .status-badge")).not_to_have_text("running",
                                                                           timeout=5000)
    expect(page.get_by_label("Console input")).to_be_disabled(timeout=5000)
    expect(page.locator("#session-status")).to_contain_text("stopped", timeout=60000)

    # a stopped session's console stays readable
    page.reload()
    expect(page.locator(".banner.warn")).to_contain_text("This session stopped")
    expect(page.locator("#console-output pre.out-stdout").first).to_have_text("2")
    expect(page.locator("#console-output img.out-image").first).to_be_visible()
    expect(page.locator("#console-output")).to_contain_text("ZeroDivisionError")
    screenshot(page, "session-stopped")
    page.goto("/projects/%d/sessions" % pid)
    expect(page.locator('#sessions tr[data-session="%d"]' % sid)).to_contain_text("stopped")
    screenshot(page, "sessions")


def test_experiments_run_twice_and_compare(page: Page) -> None:
    sign_in(page, "alice")
    pid = new_project(page)
    page.goto("/projects/%d/experiments" % pid)
    form = page.locator("#experiment-form")
    for alpha in ("0.5", "0.2"):
        form.get_by_label("Script").fill("fit.py")
        form.get_by_label("Arguments").fill("--alpha " + alpha)
        form.get_by_role("button", name="Start Run").click()
        expect(page.locator("#runs-table tbody tr", has_text="--alpha " + alpha)).to_be_visible()
    rows = page.locator("#runs-table tbody tr[data-run]")
    expect(rows).to_have_count(2)
    for i in range(2):  # the table follows the runs until both end
        expect(rows.nth(i)).to_contain_text("succeeded", timeout=ENGINE_START_MS)
    expect(page.locator('#runs-table th[data-metric="loss"]')).to_be_visible()
    expect(page.locator('#runs-table tr', has_text="--alpha 0.5").locator('td[data-metric="loss"]')).to_have_text("0.04")
    screenshot(page, "experiments")

    rows.nth(0).get_by_role("checkbox").check()
    rows.nth(1).get_by_role("checkbox").check()
    page.get_by_role("button", name="Compare selected").click()
    page.wait_for_url(re.compile(r"/experiments/compare\?ids="))
    alpha = page.locator('#comparison tr[data-metric="alpha"] td')
    expect(alpha).to_have_count(2)
    assert sorted(alpha.all_text_contents()) == ["0.2", "0.5"]
    loss = page.locator('#comparison tr[data-metric="loss"] td').all_text_contents()
    assert sorted(loss) == ["0.01", "0.04"]
    screenshot(page, "experiments-compare")

    page.locator("#comparison thead a").first.click()
    page.wait_for_url(re.compile(r"/experiments/\d+$"))
    expect(page.locator("#run-log")).to_contain_text("loss=")
    expect(page.locator('#metrics tr[data-metric="loss"]')).to_be_visible()
    # the metrics over their steps, drawn as SVG by our own script
    expect(page.locator("#metric-charts figure", has_text="loss").locator("polyline")) \
        .to_have_count(1)

    # a run that tracks a file: downloadable from the run's page once it ended
    write_file(page, pid, "report.py", "import cdsw\nopen('out.txt', 'w').write('tracked 42')\n"
               "cdsw.track_file('out.txt')\n")
    page.goto("/projects/%d/experiments" % pid)
    form.get_by_label("Script").fill("report.py")
    form.get_by_label("Arguments").fill("")
    form.get_by_role("button", name="Start Run").click()
    row = page.locator("#runs-table tbody tr", has_text="report.py")
    expect(row).to_contain_text("succeeded", timeout=ENGINE_START_MS)
    row.get_by_role("link").first.click()
    with page.expect_download() as download:
        page.locator("#tracked-files").get_by_role("link", name="out.txt").click()
    assert open(download.value.path()).read() == "tracked 42"
    screenshot(page, "experiment-run")


def test_model_deploy_test_form_and_monitoring(page: Page, server: Server, console: Console) -> None:
    sign_in(page, "alice")
    pid = new_project(page)
    page.goto("/projects/%d/models" % pid)
    page.get_by_role("link", name="New Model").first.click()
    page.get_by_label("Name", exact=True).fill("doubler")
    page.get_by_label("File", exact=True).fill("predict.py")
    page.get_by_label("Function", exact=True).fill("predict")
    page.get_by_label("Example input (JSON)").fill('{"x": 3}')
    page.get_by_label("Replicas").fill("1")
    screenshot(page, "model-new")
    page.get_by_role("button", name="Deploy Model").click()
    page.wait_for_url(re.compile(r"/models/\d+(\?.*)?$"))
    key = page.locator("#new-access-key-value").text_content() or ""
    assert len(key) > 20
    screenshot(page, "model-build")
    # the build succeeds, then the page deploys it and follows the replicas coming up
    expect(page.locator("#deployment-status")).to_contain_text("deployed", timeout=ENGINE_START_MS)
    expect(page.locator("#build-status")).to_contain_text("succeeded")
    expect(page.locator("#replicas-ready")).to_have_text("1")

    # the test form calls POST /model with the access key and the example input
    expect(page.get_by_label("Request (JSON)")).to_have_value('{\n  "x": 3\n}')
    page.get_by_label("Access key").fill(key)
    page.get_by_role("button", name="Test", exact=True).click()
    expect(page.locator("#test-status")).to_contain_text("200 OK")
    expect(page.locator("#test-answer")).to_contain_text('"success": true')
    expect(page.locator("#test-answer")).to_contain_text('"y": 7')
    screenshot(page, "model")

    page.locator(".subnav").get_by_role("link", name="Monitoring").click()
    expect(page.locator("#total-requests")).to_have_text("1")
    expect(page.locator("#replicas tbody tr[data-replica]")).to_have_count(1)
    expect(page.locator("#replicas")).to_contain_text("ready")
    for x in (1, 2):  # other callers: the page's own refresh shows the counts rise
        r = requests.post(server.url + "/model", json={"accessKey": key, "request": {"x": x}}, timeout=30)
        assert r.status_code == 200 and r.json()["success"] is True, r.text
    r = requests.post(server.url + "/model", json={"accessKey": key, "request": {"x": "not a number"}},
                      timeout=30)
    assert r.status_code == 500 and r.json()["success"] is False
    expect(page.locator("#total-requests")).to_have_text("4", timeout=15000)
    expect(page.locator("#total-successes")).to_have_text("3")
    expect(page.locator("#total-failures")).to_have_text("1")
    page.get_by_role("button", name="Log").first.click()
    expect(page.locator("#replica-log-card")).to_be_visible()
    screenshot(page, "model-monitoring")

    page.locator(".subnav").get_by_role("link", name="Overview").click()
    page.once("dialog", lambda d: d.accept())
    page.locator("#deployment").get_by_role("button", name="Stop").click()
    expect(page.locator("#deployment-status")).to_contain_text("stopped", timeout=60000)
    page.goto("/projects/%d/models" % pid)
    expect(page.locator('#models tr[data-model="doubler"]')).to_contain_text("stopped")
    screenshot(page, "models")
