"""Engine content on its own origin, in Chromium: JupyterLab opened from the session page runs a
cell on the engine origin (the master's engine port), saves a job's script as its owner's own
version, and script served by or running in the
engine, opened by the signed-in owner, cannot read the owner's workbench identity or create an
API key for them. The same script, run on the workbench's own origin, can: the attack is real
and only the origin stops it."""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Iterator

import pytest
from playwright.sync_api import Page, expect

from .conftest import VIEWPORT, Console, Server, screenshot, sign_in, start_server
from .test_journeys import new_project, write_file
from .test_workloads import run_in_console

pytestmark = pytest.mark.timeout(600)
ENGINE_START_MS = 120000  # an engine process with jupyter_server on a busy 2-core machine
LAB_MS = 120000  # JupyterLab's first load builds its page from many assets

# What a planted page or extension would do with the viewer's browser: read the workbench's
# sign-in (and its CSRF token), then create a write API key for the viewer. Every step reports
# what happened instead of throwing.
ATTACK = """
async (args) => {
  const wb = args.workbench, name = args.name, out = {};
  async function attempt(step, f) {
    try { out[step] = await f(); } catch (e) { out[step] = "blocked: " + e; }
  }
  async function me(url) {
    const r = await fetch(url + "/api/v1/auth/me", {credentials: "include"});
    const text = await r.text();
    let csrf = null;
    try { csrf = JSON.parse(text).csrf_token || null; } catch (e) {}
    return {status: r.status, csrf: csrf, user: text.indexOf('"user":{') >= 0};
  }
  async function createKey(url, csrf, step) {
    const r = await fetch(url + "/api/v1/account/api-keys", {method: "POST",
      credentials: "include", headers: {"Content-Type": "application/json",
      "X-CSRF-Token": csrf || "guess"}, body: JSON.stringify({name: name + step, scope: "write"})});
    return {status: r.status, body: (await r.text()).slice(0, 300)};
  }
  await attempt("me_here", () => me(""));
  await attempt("me_workbench", () => me(wb));
  const csrf = (out.me_workbench && out.me_workbench.csrf) || (out.me_here && out.me_here.csrf);
  await attempt("key_here", () => createKey("", csrf, "-here"));
  await attempt("key_workbench", () => createKey(wb, csrf, "-workbench"));
  await attempt("key_blind", async () => {  // a form-like POST the browser sends unread
    await fetch(wb + "/api/v1/account/api-keys", {method: "POST", mode: "no-cors",
      credentials: "include", headers: {"Content-Type": "text/plain"},
      body: JSON.stringify({name: name + "-blind", scope: "write"})});
    return "sent";
  });
  return out;
}
"""

PLANTED_PAGE = """<!doctype html>
<html><head><title>report</title></head><body><pre id="out">running</pre>
<script>
const attack = %s;
attack({workbench: %s, name: "stolen-by-page"})
  .then((r) => { document.getElementById("out").textContent = JSON.stringify(r); });
</script></body></html>
"""


def start_session(page: Page, pid: int) -> int:
    page.goto("/projects/%d/sessions" % pid)
    page.get_by_label("Kernel").select_option("python3")
    page.get_by_role("button", name="Start Session").click()
    page.wait_for_url(re.compile(r"/sessions/\d+$"))
    expect(page.locator("#session-status")).to_contain_text("running", timeout=ENGINE_START_MS)
    return int(page.url.rsplit("/", 1)[1])


def open_lab(page: Page, server: Server, sid: int, origin_re: str = "") -> Page:
    """Click "Open JupyterLab"; the new tab lands on the engine origin, not the workbench's."""
    with page.context.expect_page() as opened:
        page.get_by_role("link", name="Open JupyterLab").click()
    lab = opened.value
    origin_re = origin_re or re.escape(server.engine_url)
    failures = []  # kept on the page for the failure message
    lab.on("response", lambda r: failures.append("%d %s" % (r.status, r.url))
           if r.status >= 400 else None)
    lab.on("requestfailed", lambda r: failures.append("failed %s %s" % (r.url, r.failure)))
    setattr(lab, "failed_responses", failures)
    lab.wait_for_url(re.compile(origin_re + "/api/v1/sessions/%d/engine/lab" % sid),
                     timeout=LAB_MS)
    return lab


def api_keys(page: Page) -> Any:
    return page.evaluate("() => CDSW.api('GET', '/api/v1/account/api-keys')")


def assert_attack_failed(result: Dict[str, Any], where: str) -> None:
    for step in ("me_here", "me_workbench"):
        got = result[step]
        assert isinstance(got, str) and got.startswith("blocked") or \
            (not got["csrf"] and not got["user"]), (where, step, result)
    for step in ("key_here", "key_workbench"):
        got = result[step]
        assert isinstance(got, str) and got.startswith("blocked") or got["status"] != 201, \
            (where, step, result)


def run_a_cell(lab: Page, user: str) -> None:
    """A new notebook from Lab's launcher; one cell run, its output seen."""
    lab.locator('.jp-LauncherCard[data-category="Notebook"]').first.click(timeout=LAB_MS)
    editor = lab.locator(".jp-Notebook .jp-Cell .cm-content").first
    expect(editor).to_be_visible(timeout=60000)
    # the kernel's WebSocket through the router is up once Lab shows it idle
    expect(lab.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=60000)
    editor.click()
    lab.keyboard.type("import os; print(6 * 7, os.environ['HADOOP_USER_NAME'])")
    lab.keyboard.press("Shift+Enter")
    output = lab.locator(".jp-OutputArea-output").first
    expect(output).to_have_text("42 %s" % user, timeout=60000)
    assert not getattr(lab, "failed_responses"), getattr(lab, "failed_responses")


def test_jupyterlab_runs_a_cell_on_the_engine_origin(page: Page, server: Server) -> None:
    sign_in(page, "alice")
    sid = start_session(page, new_project(page))
    lab = open_lab(page, server, sid)
    run_a_cell(lab, "alice")
    screenshot(lab, "jupyterlab")
    # the Lab tab holds no workbench sign-in: its origin is not the workbench's
    assert lab.evaluate("() => location.origin") == server.engine_url
    assert "cdsw_session" not in lab.evaluate("() => document.cookie")
    lab.close()


WEB_APP = ("import http.server, os, threading\n"
           "class H(http.server.BaseHTTPRequestHandler):\n"
           "    def do_GET(self):\n"
           "        body = b'<h1>dash-like app at ' + self.path.encode() + b'</h1>'\n"
           "        self.send_response(200); self.send_header('Content-Type', 'text/html')\n"
           "        self.send_header('Content-Length', str(len(body))); self.end_headers()\n"
           "        self.wfile.write(body)\n"
           "srv = http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['CDSW_APP_PORT'])), H)\n"
           "threading.Thread(target=srv.serve_forever, daemon=True).start()\n"
           "print('app on', os.environ['CDSW_APP_PORT'])")


def test_the_web_app_button_opens_what_the_session_serves(page: Page, server: Server) -> None:
    """A web app run in the session on CDSW_APP_PORT opens from the session page's "Web app"
    on the engine origin (the local backend's sessions share the host's ports: the test's
    server is the only one on it)."""
    sign_in(page, "alice")
    sid = start_session(page, new_project(page))
    run_in_console(page, WEB_APP)
    expect(page.locator("#console-output .cell").last).to_contain_text("app on 8100",
                                                                        timeout=60000)
    with page.context.expect_page() as opened:
        page.get_by_role("link", name="Web app").click()
    app = opened.value
    app.wait_for_url(re.compile(re.escape(server.engine_url)
                                + "/api/v1/sessions/%d/engine/proxy/8100/$" % sid), timeout=60000)
    expect(app.locator("h1")).to_have_text("dash-like app at /")
    assert app.evaluate("() => location.origin") == server.engine_url
    app.close()


def test_saving_a_jobs_script_in_jupyterlab_approves_the_owners_own_version(
        page: Page, server: Server) -> None:
    """alice edits her job's script in JupyterLab and saves it: the job keeps running as her,
    on the version she saved, with no approval step (server/script_approvals.py). Without
    that, the job page would show the script as changed since alice saved the job."""
    sign_in(page, "alice")
    pid = new_project(page)
    write_file(page, pid, "nightly.py", "print('v1')\n")
    page.goto("/projects/%d/jobs/new" % pid)
    page.get_by_label("Name", exact=True).fill("nightly")
    page.get_by_label("Script").fill("nightly.py")
    page.get_by_role("button", name="Create Job").click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    job_url = page.url
    lab = open_lab(page, server, start_session(page, pid))
    lab.locator(".jp-DirListing-item", has_text="nightly.py").dblclick(timeout=LAB_MS)
    editor = lab.locator(".jp-FileEditor .cm-content").first
    expect(editor).to_contain_text("print('v1')", timeout=60000)
    editor.click()
    lab.keyboard.press("Control+End")
    lab.keyboard.type("print('v2')")
    lab.keyboard.press("Control+s")
    script = server.log.parent / "data" / "projects" / str(pid) / "nightly.py"
    for _ in range(100):
        if "v2" in script.read_text():
            break
        lab.wait_for_timeout(100)
    assert script.read_text() == "print('v1')\nprint('v2')", script.read_text()
    # (Lab may also try to reopen files of the user's earlier sessions, in other projects)
    failed = [f for f in getattr(lab, "failed_responses") if "nightly.py" in f]
    assert not failed, failed
    lab.close()
    page.goto(job_url)
    expect(page.locator("#run-as")).to_contain_text("runs as alice")
    expect(page.locator("#script-changed")).to_have_count(0)


def test_engine_pages_cannot_act_as_the_viewer(page: Page, server: Server,
                                              console: Console) -> None:
    console.allow(r"Failed to load resource.*403")  # the control's blind POST, refused
    sign_in(page, "alice")
    pid = new_project(page)
    write_file(page, pid, "report.html", PLANTED_PAGE % (ATTACK.strip(), json.dumps(server.url)))
    sid = start_session(page, pid)
    lab = open_lab(page, server, sid)  # the owner holds an engine cookie from here on

    # 1. a page the engine serves (the project's HTML file through jupyter_server's files)
    planted = lab.context.new_page()
    planted.goto(server.engine_url + "/api/v1/sessions/%d/engine/files/report.html" % sid)
    expect(planted.locator("#out")).not_to_have_text("running", timeout=60000)
    from_page = json.loads(planted.locator("#out").text_content() or "{}")
    print("planted page:", from_page)
    assert_attack_failed(from_page, "page")
    planted.close()

    # 2. script running in JupyterLab's own page on the engine origin (as a planted Lab or
    #    server extension's would), not sandboxed by anything but its origin
    lab.wait_for_load_state()
    in_lab = lab.evaluate(ATTACK, {"workbench": server.url, "name": "stolen-in-lab"})
    print("in JupyterLab:", in_lab)
    assert_attack_failed(in_lab, "lab")

    # the control: the same script on the workbench's origin takes the account over
    control = page.evaluate(ATTACK, {"workbench": "", "name": "control-key"})
    print("control on the workbench:", control)
    assert control["me_here"]["csrf"] and control["key_here"]["status"] == 201, control
    names = [k["name"] for k in api_keys(page)]
    assert "control-key-here" in names and not any(n.startswith("stolen") for n in names), names
    for key in api_keys(page):
        page.evaluate("(id) => CDSW.api('DELETE', '/api/v1/account/api-keys/' + id)", key["id"])


@pytest.fixture(scope="module")
def subdomain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start_server(tmp_path_factory.mktemp("browser-subdomain"), "subdomain")


def test_subdomain_mode_serves_jupyterlab_on_a_host_of_its_own(
        browser: Any, subdomain_server: Server) -> None:
    """cdsw.engine.origin=subdomain with the domain localhost: the session's Lab opens at
    s-ID-TAG.localhost (as CDSW's wildcard subdomains), runs a cell, and cannot call the
    workbench as the viewer."""
    server = subdomain_server
    context = browser.new_context(base_url=server.url, viewport=VIEWPORT)
    context.set_default_timeout(15000)
    page = context.new_page()
    try:
        sign_in(page, "alice")
        sid = start_session(page, new_project(page))
        host = r"http://s-%d-[0-9a-f]{12}\.localhost:\d+" % sid
        lab = open_lab(page, server, sid, origin_re=host)
        origin = lab.evaluate("() => location.origin")
        assert re.fullmatch(host, origin) and origin != server.url, origin
        run_a_cell(lab, "alice")
        screenshot(lab, "jupyterlab-subdomain")
        assert "cdsw_session" not in lab.evaluate("() => document.cookie")
        in_lab = lab.evaluate(ATTACK, {"workbench": server.url, "name": "stolen-sub"})
        print("in JupyterLab on its subdomain:", in_lab)
        assert_attack_failed(in_lab, "subdomain")
        names = [k["name"] for k in api_keys(page)]
        assert not any(n.startswith("stolen") for n in names), names
    finally:
        context.close()
