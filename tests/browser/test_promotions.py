"""Promotion DEV -> PROD in Chromium: alice (no PROD grant) requests it on her DEV project's
Promotions page and cannot approve it; carol (granted PROD) approves it on the PROD project;
the history shows it, and carol rolls it back. The set-up (users, clusters, projects) goes
through the API; the journey through the pages. Its own server: the clusters it registers
would otherwise be seen by every other browser test."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
import requests
from playwright.sync_api import Page, expect

from ..conftest import PASSWORD
from .conftest import Server, screenshot, sign_in, start_server


@pytest.fixture(scope="module")
def cluster_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start_server(tmp_path_factory.mktemp("browser-clusters"))


def session_for(server: Server, username: str) -> requests.Session:
    s = requests.Session()
    r = s.post(server.url + "/api/v1/auth/signin",
               json={"username": username, "password": PASSWORD}, timeout=30)
    assert r.status_code == 200, r.text
    s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return s


def ok(r: requests.Response, code: int = 200) -> Any:
    assert r.status_code == code, "%s %s -> %d %s" % (r.request.method, r.request.url,
                                                      r.status_code, r.text)
    return r.json() if r.content else None


@pytest.fixture(scope="module")
def world(cluster_server: Server) -> Dict[str, Any]:
    url = cluster_server.url + "/api/v1"
    admin = session_for(cluster_server, "admin")
    ok(admin.post(url + "/users", json={"username": "carol", "password": PASSWORD}), 201)
    ok(admin.post(url + "/clusters", json={"name": "DEV", "requires_grant": False}), 201)
    prod = ok(admin.post(url + "/clusters", json={"name": "PROD", "kind": "prod"}), 201)
    ok(admin.post(url + "/clusters/%d/grants" % prod["id"], json={"username": "carol"}), 201)
    alice, carol = session_for(cluster_server, "alice"), session_for(cluster_server, "carol")
    src = ok(alice.post(url + "/projects", json={"name": "churn-dev"}), 201)
    ok(alice.put(url + "/projects/%d/cluster" % src["id"], json={"cluster": "DEV"}))
    ok(alice.put(url + "/projects/%d/files/content" % src["id"],
                 json={"path": "score.py", "content": "print('scored')\n"}))
    ok(alice.post(url + "/projects/%d/jobs" % src["id"],
                  json={"name": "nightly", "script": "score.py", "schedule": "0 3 * * *"}), 201)
    dst = ok(carol.post(url + "/projects", json={"name": "churn-prod"}), 201)
    ok(carol.put(url + "/projects/%d/cluster" % dst["id"], json={"cluster": "PROD"}))
    me = ok(alice.get(url + "/auth/me"))["user"]
    ok(carol.put(url + "/projects/%d/collaborators/%d" % (dst["id"], me["id"]),
                 json={"role": "contributor"}))
    return {"src": src["id"], "dst": dst["id"], "data": Path(cluster_server.log).parent / "data"}


def test_request_approve_history_rollback(browser: Any, cluster_server: Server,
                                          world: Dict[str, Any]) -> None:
    def new_page() -> Page:
        context = browser.new_context(base_url=cluster_server.url,
                                      viewport={"width": 1280, "height": 800})
        context.set_default_timeout(15000)
        pg = context.new_page()
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.errors = errors  # type: ignore[attr-defined]
        return pg

    src, dst = world["src"], world["dst"]
    # alice requests on her DEV project's Promotions page
    page = new_page()
    sign_in(page, "alice")
    page.goto("/projects/%d" % src)
    page.get_by_role("link", name="Promotions").click()
    expect(page.locator("#cluster-badge")).to_have_text("cluster DEV")
    page.get_by_label("Target project").select_option(label="churn-prod (PROD)")
    page.get_by_label("Note").fill("nightly scoring, first release")
    page.get_by_role("button", name="Request promotion").click()
    page.wait_for_url(re.compile(r"/projects/%d/promotions/\d+$" % src))
    promotion_id = int(page.url.rsplit("/", 1)[1])
    expect(page.locator("#promotion-status")).to_have_text("pending")
    expect(page.locator("#diff")).to_contain_text("+ score.py")
    expect(page.locator("#diff-jobs")).to_contain_text("+ nightly")
    # on the target too, the requester gets no approve button
    page.goto("/projects/%d/promotions/%d" % (dst, promotion_id))
    expect(page.locator("#review-note")).to_contain_text("Waiting for review")
    expect(page.locator("#approve")).to_have_count(0)
    screenshot(page, "promotion-requested")
    assert not page.errors  # type: ignore[attr-defined]
    page.context.close()

    # carol, granted PROD, approves it on the PROD project
    page = new_page()
    sign_in(page, "carol")
    page.goto("/projects/%d/promotions" % dst)
    page.locator('tr[data-promotion="%d"] a' % promotion_id).click()
    page.wait_for_url("**/projects/%d/promotions/%d" % (dst, promotion_id))
    page.get_by_role("button", name="Approve and apply").click()
    expect(page.locator("#promotion-status")).to_have_text("approved")
    expect(page.locator("#reviewed")).to_contain_text("Approved by carol")
    prod_files = world["data"] / "projects" / str(dst)
    assert (prod_files / "score.py").read_text() == "print('scored')\n"
    # the history, on both projects
    page.goto("/projects/%d/promotions" % dst)
    row = page.locator('tr[data-promotion="%d"]' % promotion_id)
    expect(row.locator(".promotion-status")).to_have_text("approved")
    expect(row).to_contain_text("alice")
    screenshot(page, "promotion-history")
    # and the rollback restores PROD as it was
    page.goto("/projects/%d/promotions/%d" % (dst, promotion_id))
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Roll back").click()
    expect(page.locator("#promotion-status")).to_have_text("rolled_back")
    expect(page.locator("#rolled-back")).to_contain_text("Rolled back by carol")
    assert not (prod_files / "score.py").exists()
    assert not page.errors  # type: ignore[attr-defined]
    page.context.close()


def test_admin_adds_a_cluster_and_grants_it_and_a_project_is_made_there(
        browser: Any, cluster_server: Server, world: Dict[str, Any]) -> None:
    """The admin's Clusters page registers QA and grants it to alice, then revokes carol's
    PROD grant; alice picks QA on the New Project page and her project runs there."""
    context = browser.new_context(base_url=cluster_server.url,
                                  viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15000)
    page = context.new_page()
    errors: list = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, "admin")
    page.goto("/admin")
    page.get_by_role("link", name="Clusters").click()
    page.wait_for_url("**/admin/clusters")
    form = page.locator("#new-cluster")
    form.get_by_label("Name").fill("QA")
    form.get_by_label("Kind").select_option("test")
    form.get_by_label("Description").fill("the test cluster")
    form.get_by_role("button", name="Add Cluster").click()
    row = page.locator('tr[data-cluster="QA"]')
    expect(row).to_contain_text("cdsw.cluster=QA")
    expect(row).to_contain_text("site administrators only")
    row.get_by_label("User").fill("alice")
    row.get_by_role("button", name="Grant").click()
    expect(page.locator('tr[data-cluster="QA"] [data-grantee="user alice"]')).to_have_count(1)
    # a wrong name: one error next to the form, nothing granted
    page.locator('tr[data-cluster="QA"]').get_by_label("User").fill("nobody")
    page.locator('tr[data-cluster="QA"]').get_by_role("button", name="Grant").click()
    expect(page.locator('tr[data-cluster="QA"] form.grant .form-error')).to_contain_text(
        "no user named nobody")
    page.once("dialog", lambda d: d.accept())
    page.locator('[data-grantee="user carol"]').get_by_role("button", name="Revoke").click()
    expect(page.locator('[data-grantee="user carol"]')).to_have_count(0)
    screenshot(page, "admin-clusters")
    assert not errors, errors
    context.close()

    context = browser.new_context(base_url=cluster_server.url,
                                  viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15000)
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, "alice")
    page.goto("/projects/new")
    page.get_by_label("Project name").fill("qa-checks")
    cluster = page.get_by_label("Cluster")
    expect(cluster.locator('option[value="PROD"]')).to_be_disabled()
    cluster.select_option(label="QA (test)")
    page.get_by_role("button", name="Create Project").click()
    page.wait_for_url(re.compile(r"/projects/\d+$"))
    project_id = int(page.url.rsplit("/", 1)[1])
    page.goto("/projects/%d/settings" % project_id)
    expect(page.locator("#project-cluster")).to_contain_text("cluster QA")
    assert not errors, errors
    context.close()
