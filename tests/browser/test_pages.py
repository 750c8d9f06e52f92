"""The pages' server side, without a browser: sign-in redirects, errors as pages, permissions
on pages, sanitised READMEs, the fallback without npm assets, and the pipeline layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdsw_agent.server.routes.jobs import PipelineNode, PipelineOut
from cdsw_agent.web import assets
from cdsw_agent.web.pages.common import safe_next
from cdsw_agent.web.pages.jobs import NODE_H, NODE_W, layout

from ..conftest import Api

HTML = {"accept": "text/html,application/xhtml+xml"}


def _project(api: Api, client, name: str = "demo") -> int:  # type: ignore[no-untyped-def]
    r = client.post("/api/v1/projects", json={"name": name, "template": "python"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_signed_out_browsers_go_to_sign_in_and_api_clients_get_json(api: Api) -> None:
    r = api.client.get("/projects/1/jobs?x=1", headers=HTML, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/signin?next=/projects/1/jobs%3Fx%3D1"
    r = api.client.get("/projects", follow_redirects=False)  # no text/html: an API-style answer
    assert r.status_code == 401 and r.json()["error"].startswith("sign in first")
    r = api.client.get("/api/v1/projects", headers=HTML)
    assert r.status_code == 401 and "error" in r.json()
    r = api.client.get("/signin", headers=HTML)
    assert r.status_code == 200 and "Sign in to CDSW" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]


@pytest.mark.parametrize("target,expected", [
    ("/projects/3", "/projects/3"), ("//evil.example/x", "/"), ("https://evil.example/", "/"),
    ("javascript:alert(1)", "/"), ("/\\evil.example", "/"), ("", "/")])
def test_sign_in_returns_only_to_this_site(target: str, expected: str) -> None:
    assert safe_next(target) == expected


def test_pages_answer_with_permission_errors_as_pages(api: Api) -> None:
    owner, viewer, stranger = api.user(), api.user(), api.user()
    c_owner, c_viewer, c_stranger = (api.client_for(u) for u in (owner, viewer, stranger))
    pid = _project(api, c_owner)
    assert c_owner.put("/api/v1/projects/%d/collaborators/%d" % (pid, viewer.id),
                       json={"role": "viewer"}).status_code == 200
    r = c_stranger.get("/projects/%d" % pid, headers=HTML)
    assert r.status_code == 404 and "project not found" in r.text and "<html" in r.text
    r = c_viewer.get("/projects/%d/settings" % pid, headers=HTML)
    assert r.status_code == 403 and "contributor" in r.text
    r = c_viewer.get("/projects/%d/jobs/new" % pid, headers=HTML)
    assert r.status_code == 403
    r = c_viewer.get("/admin/users", headers=HTML)
    assert r.status_code == 403 and "only site administrators" in r.text
    # a viewer reads the file but gets no Save button, and no settings tab
    r = c_viewer.get("/projects/%d/files/analysis.py" % pid, headers=HTML)
    assert r.status_code == 200 and 'id="save"' not in r.text and "readonly" in r.text
    assert "/settings" not in r.text
    r = c_owner.get("/projects/%d/files/analysis.py" % pid, headers=HTML)
    assert 'id="save"' in r.text and "/projects/%d/settings" % pid in r.text
    assert c_owner.get("/projects/abc", headers=HTML).status_code == 404


def test_readme_is_rendered_without_its_html(api: Api) -> None:
    owner = api.user()
    c = api.client_for(owner)
    pid = _project(api, c)
    readme = "# Title\n\n<script>alert(1)</script>\n\n[x](javascript:alert(2)) **bold**\n"
    assert c.put("/api/v1/projects/%d/files/content" % pid,
                 json={"path": "README.md", "content": readme}).status_code == 200
    r = c.get("/projects/%d" % pid, headers=HTML)
    assert "<h1>Title</h1>" in r.text and "<strong>bold</strong>" in r.text
    assert "<script>alert(1)" not in r.text and "&lt;script&gt;alert(1)" in r.text
    assert 'href="javascript:' not in r.text


def test_editor_falls_back_to_plain_text_without_npm_assets(api: Api, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    c = api.client_for(api.user())
    pid = _project(api, c)
    r = c.get("/projects/%d/files/analysis.py" % pid, headers=HTML)
    assert "/vendor/codemirror/lib/codemirror.js" in r.text and "/vendor/codemirror/mode/python/python.js" in r.text
    monkeypatch.setattr(assets, "VENDOR_DIR", tmp_path / "no-node-modules")
    r = c.get("/projects/%d/files/analysis.py" % pid, headers=HTML)
    assert r.status_code == 200
    assert "/vendor/" not in r.text and "not installed" in r.text and "npm ci" in r.text
    assert 'id="editor"' in r.text and "import math" in r.text


def test_pipeline_layout_places_children_right_of_their_parents() -> None:
    def node(i: int) -> PipelineNode:
        return PipelineNode(id=i, name="j%d" % i, schedule_kind="manual", enabled=True,
                            last_status=None)
    graph = PipelineOut(nodes=[node(i) for i in range(1, 6)],
                        edges=[{"from": 1, "to": 2}, {"from": 1, "to": 3}, {"from": 2, "to": 4}])
    g = layout(graph)
    boxes = {b.id: b for b in g["boxes"]}
    assert boxes[2].x > boxes[1].x and boxes[4].x > boxes[2].x and boxes[3].x == boxes[2].x
    assert boxes[2].y == boxes[1].y == boxes[4].y  # the first child sits beside its parent
    assert boxes[3].y > boxes[2].y and boxes[5].y > boxes[3].y  # siblings, then the next tree
    assert boxes[5].x == boxes[1].x
    assert len(g["edges"]) == 3 and boxes[1].status == "never run"
    assert g["width"] >= boxes[4].x + NODE_W and g["height"] >= boxes[5].y + NODE_H
