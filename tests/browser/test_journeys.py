"""The main journeys of round 1, as a user walks them in Chromium: sign in, a project from a
template, its files and README, editing, a pipeline of two jobs with logs, API keys, teams,
project settings and the site administration pages."""

from __future__ import annotations

import itertools
import re
from typing import Tuple

import requests
from playwright.sync_api import Page, expect

from .conftest import Console, Server, screenshot, sign_in

_names = itertools.count(1)


def new_project(page: Page, template: str = "python") -> int:
    """Creates a project through the New Project page; returns its id."""
    return new_named_project(page, template)[0]


def new_named_project(page: Page, template: str = "python") -> Tuple[int, str]:
    """Creates a project through the New Project page; returns its id and name."""
    # zero-padded so no name is a substring of another (the search test looks one up by name)
    name = "Churn %03d" % next(_names)
    page.goto("/projects/new")
    page.get_by_label("Project name").fill(name)
    page.get_by_label("Template", exact=True).check()
    page.locator('select[name="template"]').select_option(template)
    page.get_by_role("button", name="Create Project").click()
    page.wait_for_url(re.compile(r"/projects/\d+$"))
    expect(page.get_by_role("heading", level=1, name=name)).to_be_visible()
    return int(page.url.rsplit("/", 1)[1]), name


def write_file(page: Page, project_id: int, path: str, content: str) -> None:
    """New File on the Files page, then type the content into the editor and save."""
    page.goto("/projects/%d/files" % project_id)
    page.get_by_label("New file name").fill(path)
    page.get_by_role("button", name="New File").click()
    page.wait_for_url("**/files/" + path)
    page.locator(".CodeMirror").click()
    page.keyboard.insert_text(content)
    page.keyboard.press("Control+s")
    expect(page.locator("#editor-status")).to_contain_text("saved")


def test_unauthenticated_pages_send_to_sign_in_and_back(page: Page, console: Console) -> None:
    page.goto("/account")
    expect(page).to_have_url(re.compile(r"/signin\?next=/account$"))
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("wrong password")
    console.allow(r"status of 401")  # the sign-in call answers 401 on purpose here
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".form-error")).to_contain_text("invalid username or password")
    screenshot(page, "signin-error")
    page.get_by_label("Password").fill("correct-horse-42")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/account")
    expect(page.get_by_role("heading", name="Account")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/signin")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/signin\?next=/$"))


def test_project_from_template_files_readme_and_editing(page: Page) -> None:
    sign_in(page, "alice")
    screenshot(page, "projects-empty")
    pid, name = new_named_project(page)
    readme = page.get_by_test_id("readme")
    expect(readme.locator("h1")).to_have_text("Python: analysis, plots, a job and a model")
    expect(readme.locator("code").first).to_have_text("analysis.py")
    screenshot(page, "project-overview")

    # the file tree opens the editor with Python highlighting
    page.locator(".files-card .tree").get_by_role("link", name="analysis.py").click()
    page.wait_for_url("**/files/analysis.py")
    expect(page.locator(".CodeMirror")).to_be_visible()
    expect(page.locator(".CodeMirror .cm-keyword").first).to_be_visible()
    expect(page.locator(".CodeMirror")).to_contain_text("import math")
    screenshot(page, "editor")

    # edit, save with the button, and see the change after a reload
    page.locator(".CodeMirror-code").click()
    page.keyboard.press("Control+End")
    page.keyboard.insert_text("\nprint('edited in the browser')\n")
    expect(page.locator("#editor-status")).to_have_text("unsaved changes")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#editor-status")).to_contain_text("saved")
    page.reload()
    expect(page.locator(".CodeMirror")).to_contain_text("print('edited in the browser')")

    # a new file in a new folder, opened from the expanding tree
    page.goto("/projects/%d/files" % pid)
    page.get_by_label("New file name").fill("lib")
    page.get_by_role("button", name="New Folder").click()
    expect(page.locator("table.files")).to_contain_text("lib/")
    screenshot(page, "files")
    write_file(page, pid, "lib/util.py", "ANSWER = 42\n")
    page.goto("/projects/%d" % pid)
    page.locator(".files-card").get_by_role("button", name="lib").click()
    page.locator(".files-card").get_by_role("link", name="util.py").click()
    page.wait_for_url("**/files/lib/util.py")
    expect(page.locator(".CodeMirror")).to_contain_text("ANSWER = 42")

    # the projects list finds it by search and filters (other tests of this session's server
    # made more "Churn" projects for alice: search for this one's whole name)
    page.goto("/projects")
    page.get_by_label("Search projects").fill(name)
    page.get_by_role("button", name="Filter").click()
    expect(page.locator(".project-card")).to_have_count(1)
    expect(page.locator(".project-card")).to_contain_text(name)
    page.locator('select[name="visibility"]').select_option("public")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator(".empty")).to_contain_text("No project matches")
    page.goto("/projects")
    screenshot(page, "projects")


def test_pipeline_of_two_jobs_runs_with_logs(page: Page, server: Server, console: Console) -> None:
    sign_in(page, "alice")
    pid = new_project(page)
    write_file(page, pid, "etl.py", "import sys\nprint('etl done', sys.argv[1:])\n")
    write_file(page, pid, "report.py", "print('report done')\n")

    page.goto("/projects/%d/jobs" % pid)
    page.get_by_role("link", name="New Job").first.click()
    page.get_by_label("Name", exact=True).fill("etl")
    page.get_by_label("Script").fill("etl.py")
    page.get_by_label("Arguments").fill("--day today")
    page.get_by_role("button", name="Create Job").click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    etl_url = page.url

    # the form shows the API's error next to the field that caused it
    page.goto("/projects/%d/jobs/new" % pid)
    screenshot(page, "job-form")
    page.get_by_label("Name", exact=True).fill("report")
    page.get_by_label("Script").fill("missing.py")
    page.get_by_label("Dependent on another job").check()
    page.get_by_label("Runs after this job succeeds").select_option(label="etl")
    console.allow(r"status of 422")  # the missing script is refused on purpose
    page.get_by_role("button", name="Create Job").click()
    expect(page.locator(".field-error")).to_contain_text("missing.py not found")
    page.get_by_label("Script").fill("report.py")
    page.get_by_role("button", name="Create Job").click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    report_url = page.url
    expect(page.locator("dl.facts")).to_contain_text("after etl")

    page.goto(etl_url)
    page.get_by_role("button", name="Run Now").click()
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    expect(page.locator("#run-status")).to_contain_text("succeeded", timeout=60000)
    expect(page.locator("#run-log")).to_contain_text("etl done ['--day', 'today']")
    screenshot(page, "job-run")

    page.goto(report_url)
    first_run = page.locator("#runs tbody tr").first
    for _ in range(60):  # the child starts once its parent succeeded
        if "succeeded" in (first_run.text_content() or ""):
            break
        page.wait_for_timeout(1000)
        page.reload()
    expect(first_run).to_contain_text("succeeded")
    expect(first_run).to_contain_text("parent")
    first_run.get_by_role("link").click()
    expect(page.locator("#run-log")).to_contain_text("report done")
    screenshot(page, "job-history")

    # alice's own edit in the editor is approved by her saving it ...
    page.goto("/projects/%d/files/etl.py" % pid)
    page.locator(".CodeMirror").click()
    page.keyboard.press("Control+End")
    page.keyboard.insert_text("print('changed')\n")
    page.keyboard.press("Control+s")
    expect(page.locator("#editor-status")).to_contain_text("saved")
    page.goto(etl_url)
    expect(page.locator("#run-as")).to_contain_text("runs as alice")
    expect(page.locator("#script-changed")).to_have_count(0)
    # ... a change made elsewhere (a session, git: written to the project's folder here) is held
    # back from scheduled runs until someone approves it
    script = server.log.parent / "data" / "projects" / str(pid) / "etl.py"
    script.write_text(script.read_text() + "print('from a session')\n")
    page.reload()
    expect(page.locator("#script-changed")).to_contain_text("etl.py changed since alice saved")
    screenshot(page, "job-script-changed")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Approve this version").click()
    expect(page.locator("#script-changed")).to_have_count(0)
    expect(page.locator("#run-as")).to_contain_text("runs as alice")

    page.goto("/projects/%d/pipeline" % pid)
    nodes = page.locator("#pipeline-graph a.node")
    expect(nodes).to_have_count(2)
    expect(page.locator('#pipeline-graph a[data-job="etl"]')).to_have_attribute("data-status", "succeeded")
    expect(page.locator('#pipeline-graph a[data-job="report"]')).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#pipeline-graph path.edge")).to_have_count(1)
    screenshot(page, "pipeline")
    page.goto("/projects/%d/jobs" % pid)
    screenshot(page, "jobs")


def test_account_api_key_is_shown_once_and_works(page: Page, server: Server, console: Console) -> None:
    sign_in(page, "alice")
    page.goto("/account")
    page.get_by_label("Name", exact=True).fill("notebook")
    page.get_by_role("button", name="Create API key").click()
    expect(page.locator("#new-key")).to_be_visible()
    key = page.locator("#new-key-value").text_content() or ""
    assert len(key) > 20
    r = requests.get(server.url + "/api/v1/account", headers={"Authorization": "Bearer " + key},
                     timeout=10)
    assert r.status_code == 200 and r.json()["username"] == "alice"
    screenshot(page, "account")

    console.allow(r"status of 409")  # the duplicate name is refused on purpose
    page.get_by_label("Name", exact=True).fill("notebook")
    page.get_by_role("button", name="Create API key").click()
    expect(page.locator("#key-form .form-error")).to_contain_text("already have an API key named")

    page.reload()
    expect(page.locator("#new-key")).to_be_hidden()  # never shown again
    page.once("dialog", lambda d: d.accept())
    page.locator('tr[data-key="notebook"]').get_by_role("button", name="Revoke").click()
    expect(page.locator('tr[data-key="notebook"]')).to_contain_text("revoked")
    r = requests.get(server.url + "/api/v1/account", headers={"Authorization": "Bearer " + key},
                     timeout=10)
    assert r.status_code == 401


def test_teams_and_project_settings(page: Page) -> None:
    sign_in(page, "alice")
    page.goto("/teams")
    page.get_by_label("Name (lower case").fill("analysts-%d" % next(_names))
    page.get_by_role("button", name="Create Team").click()
    page.wait_for_url(re.compile(r"/teams/\d+$"))
    page.get_by_label("Add user").fill("admin")
    page.get_by_role("button", name="Add member").click()
    expect(page.locator('#members tr[data-user="admin"]')).to_be_visible()
    screenshot(page, "team")

    pid = new_project(page)
    page.goto("/projects/%d/settings" % pid)
    page.get_by_label("Add collaborator").fill("admin")
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.locator('#collaborators tr[data-user="admin"]')).to_be_visible()
    env_form = page.locator('form[data-api*="/env/"]')
    env_form.get_by_label("Name").fill("DATA_PATH")
    env_form.get_by_label("Value").fill("/data/churn")
    env_form.get_by_role("button", name="Set variable").click()
    expect(page.locator('#env tr[data-name="DATA_PATH"]')).to_contain_text("/data/churn")
    screenshot(page, "project-settings")


def test_admin_pages_load(page: Page, console: Console) -> None:
    sign_in(page, "admin")
    for path, heading in (("/admin/users", "Users"), ("/admin/engines", "Engines"),
                          ("/admin/clusters", "Clusters"), ("/admin/settings", "Site settings"),
                          ("/admin/audit", "Audit log"), ("/admin/health", "Health")):
        page.goto(path)
        expect(page.get_by_role("heading", level=1, name=heading)).to_be_visible()
        screenshot(page, "admin-" + path.rsplit("/", 1)[1])
    page.goto("/admin/audit")
    expect(page.locator("#audit")).to_contain_text("signin")
    page.goto("/admin/health")
    expect(page.locator('#checks tr[data-check="database"]')).to_contain_text("OK")

    # a profile the API refuses: the error shows next to the field it names
    page.goto("/admin/engines")
    console.allow(r"status of 422")
    form = page.locator('form[data-api="POST /api/v1/engine-profiles"]')
    form.get_by_label("Name").fill("!bad")
    form.get_by_role("button", name="Add profile").click()
    expect(form.locator(".field-error")).to_be_visible()
    form.get_by_label("Name").fill("small")
    form.get_by_role("button", name="Add profile").click()
    expect(page.locator('#profiles tr[data-profile="small"]')).to_be_visible()

    # users: a data scientist cannot open the administration
    page.goto("/admin/users")
    expect(page.locator('#users tr[data-user="alice"]')).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/signin")
    sign_in(page, "alice")
    console.allow(r"status of 403")
    response = page.goto("/admin/users")
    assert response is not None and response.status == 403
    expect(page.get_by_test_id("error-message")).to_contain_text("only site administrators")
