"""Engine content on its own origin (sessions/engine_origin.py), through the API with a real
engine (local backend): the workbench sign-in is not accepted on engine routes, the engine
credential is not accepted by the workbench API, an engine origin answers engine paths only,
launch tokens work once for their own session, state changes need the engine's own Origin, and
signing out or losing the share ends engine access. Both modes: a second port, and one
subdomain per session routed by Host."""

from __future__ import annotations

from typing import Any, Dict, Iterator, Optional, Tuple
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from cdsw_agent.sessions import engine_origin
from cdsw_agent.sessions.monitor import manager_for
from cdsw_agent.store.models import User

from ..conftest import PASSWORD, Api, build_api, make_settings
from .test_sessions_api import World

pytestmark = pytest.mark.timeout(300)
ENGINE_PORT = 8081  # the default; the TestClient binds nothing, it only sets the ASGI scope


class Browser:
    """One user's browser: the workbench cookie and CSRF token, and the engine cookies it got."""

    def __init__(self, api: Api, user: User):
        self.app = api.client.app
        c = TestClient(self.app)
        r = c.post("/api/v1/auth/signin", json={"username": user.username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        self.workbench_cookie = r.cookies["cdsw_session"]
        self.csrf = r.json()["csrf_token"]
        self.engine_cookies: Dict[str, str] = {}

    def call(self, method: str, url: str, cookies: Optional[Dict[str, str]] = None,
             headers: Optional[Dict[str, str]] = None, **kw: Any) -> Any:
        parts = urlsplit(url)
        base = "%s://%s" % (parts.scheme or "http", parts.netloc or "testserver")
        c = TestClient(self.app, base_url=base, follow_redirects=False)
        h = dict(headers or {})
        if cookies:
            h["Cookie"] = "; ".join("%s=%s" % kv for kv in cookies.items())
        path = parts.path + ("?" + parts.query if parts.query else "")
        return c.request(method, path, headers=h, **kw)

    def workbench(self, method: str, path: str, **kw: Any) -> Any:
        return self.call(method, "http://testserver" + path,
                         cookies={"cdsw_session": self.workbench_cookie},
                         headers={"X-CSRF-Token": self.csrf}, **kw)

    def open_engine(self, session: int, path: str = "api/status") -> Tuple[str, Any]:
        """What "Open JupyterLab" does: ask the workbench, follow the launch URL, keep the
        engine cookie. Returns (engine origin, launch response)."""
        r = self.workbench("POST", "/api/v1/sessions/%d/engine-access" % session,
                           json={"path": path})
        assert r.status_code == 200, r.text
        access = r.json()
        launch = self.call("GET", access["url"])
        assert launch.status_code == 303, launch.text
        name = engine_origin.cookie_name(session)
        self.engine_cookies[name] = launch.cookies[name]
        return access["origin"], launch


def _world(tmp: Any, **overrides: Any) -> World:
    settings = make_settings(tmp / "data", session_idle_minutes=30, session_max_minutes=120,
                             **overrides)
    return World(build_api(settings))


def _close(w: World) -> None:
    orch = manager_for(w.api.client.app.state.server).orchestrator
    for ref in orch.list():
        orch.remove(ref.id)
    w.api.db.engine.dispose()


@pytest.fixture(scope="module")
def port_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = _world(tmp_path_factory.mktemp("engine-port"))
    yield w
    _close(w)


@pytest.fixture(scope="module")
def port_session(port_world: World) -> int:
    return port_world.running()


def test_engine_access_hands_out_a_launch_url_on_the_engine_port(port_world: World,
                                                                 port_session: int) -> None:
    owner = Browser(port_world.api, port_world.owner)
    origin, launch = owner.open_engine(port_session, "lab")
    assert origin == "http://testserver:%d" % ENGINE_PORT
    base = "/api/v1/sessions/%d/engine/" % port_session
    assert launch.headers["location"] == base + "lab"
    set_cookie = launch.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "Path=%s" % base in set_cookie, set_cookie
    assert "samesite=lax" in set_cookie.lower()
    # with that cookie, and only on the engine origin, jupyter_server answers
    r = owner.call("GET", origin + base + "api/status", cookies=owner.engine_cookies)
    assert r.status_code == 200 and "kernels" in r.json(), r.text
    # Lab's own "Authorization: token ..." header is not an error (the master adds the token)
    r = owner.call("GET", origin + base + "api/status", cookies=owner.engine_cookies,
                   headers={"Authorization": "token whatever-lab-sends"})
    assert r.status_code == 200, r.text


def test_workbench_cookie_is_not_accepted_on_engine_routes(port_world: World,
                                                           port_session: int) -> None:
    owner = Browser(port_world.api, port_world.owner)
    base = "/api/v1/sessions/%d/engine/" % port_session
    wb = {"cdsw_session": owner.workbench_cookie}
    for origin in ("http://testserver", "http://testserver:%d" % ENGINE_PORT):
        r = owner.call("GET", origin + base + "api/status", cookies=wb,
                       headers={"X-CSRF-Token": owner.csrf})
        assert r.status_code == 401, (origin, r.status_code, r.text)
        r = owner.call("PUT", origin + base + "api/contents/by-cookie.txt", cookies=wb,
                       headers={"X-CSRF-Token": owner.csrf, "Origin": origin},
                       json={"type": "file", "format": "text", "content": "x"})
        assert r.status_code == 401, (origin, r.status_code, r.text)
        ws = TestClient(port_world.api.client.app)
        with pytest.raises(WebSocketDisconnect) as refused:
            with ws.websocket_connect(origin.replace("http", "ws") + base + "api/events/subscribe",
                                      headers={"Cookie": "cdsw_session=" + owner.workbench_cookie,
                                               "Origin": origin}):
                pass
        assert refused.value.code == 1008
    project = port_world.api.settings.projects_dir / str(port_world.pid)
    assert not (project / "by-cookie.txt").exists()
    # on the workbench's origin, engine paths are sandboxed should a browser render them
    r = owner.call("GET", "http://testserver" + base + "api/status", cookies=wb)
    assert r.headers["content-security-policy"].startswith("sandbox")
    assert "allow-same-origin" not in r.headers["content-security-policy"]


def test_engine_credential_is_not_accepted_by_the_workbench_api(port_world: World,
                                                                port_session: int) -> None:
    owner = Browser(port_world.api, port_world.owner)
    origin, _ = owner.open_engine(port_session)
    cookie = owner.engine_cookies[engine_origin.cookie_name(port_session)]
    base = "/api/v1/sessions/%d/engine/" % port_session
    for where in ("http://testserver", origin):
        # as itself, as a workbench cookie, as a Bearer key: never a workbench caller
        for cookies, headers in ((owner.engine_cookies, {}), ({"cdsw_session": cookie}, {}),
                                 ({}, {"Authorization": "Bearer " + cookie})):
            r = owner.call("GET", where + "/api/v1/auth/me", cookies=cookies, headers=headers)
            anonymous = r.status_code == 200 and r.json()["user"] is None \
                and r.json()["csrf_token"] is None
            assert anonymous or r.status_code in (401, 404), (where, r.status_code, r.text)
            r = owner.call("POST", where + "/api/v1/account/api-keys", cookies=cookies,
                           headers=dict(headers, Origin=where), json={"name": "stolen"})
            assert r.status_code in (401, 403, 404), (where, r.status_code, r.text)
    # on the workbench's origin the engine cookie does not open the engine either
    r = owner.call("GET", "http://testserver" + base + "api/status", cookies=owner.engine_cookies)
    assert r.status_code == 401, r.text
    r = owner.workbench("GET", "/api/v1/account/api-keys")
    assert r.status_code == 200 and not any(k["name"] == "stolen" for k in r.json()), r.text


def test_engine_origin_answers_engine_paths_only(port_world: World, port_session: int) -> None:
    owner = Browser(port_world.api, port_world.owner)
    origin, _ = owner.open_engine(port_session)
    both = dict(owner.engine_cookies, cdsw_session=owner.workbench_cookie)
    for path in ("/api/v1/auth/me", "/projects", "/", "/static/js/app.js", "/healthz",
                 "/api/v1/sessions/%d" % port_session, "/api/v1/openapi.json"):
        r = owner.call("GET", origin + path, cookies=both)
        assert r.status_code == 404, (path, r.status_code, r.text[:200])
        assert "engines only" in r.json()["error"]
    r = owner.call("POST", origin + "/api/v1/account/api-keys", cookies=both,
                   headers={"X-CSRF-Token": owner.csrf, "Origin": origin}, json={"name": "x"})
    assert r.status_code == 404
    # the model front door answers before the middlewares: it must not answer here either
    for path in ("/model", "/api/altus-ds-1/models/call-model"):
        r = owner.call("POST", origin + path, json={"accessKey": "k", "request": {}})
        assert r.status_code == 404 and "engines only" in r.json()["error"], (path, r.text)


def test_state_changes_on_the_engine_origin_need_its_own_origin(port_world: World,
                                                                port_session: int) -> None:
    owner = Browser(port_world.api, port_world.owner)
    origin, _ = owner.open_engine(port_session)
    url = origin + "/api/v1/sessions/%d/engine/api/contents/through-origin.txt" % port_session
    body = {"type": "file", "format": "text", "content": "hello"}
    for bad in ({}, {"Origin": "http://testserver"}, {"Origin": "null"},
                {"Origin": "http://evil.example"}):
        r = owner.call("PUT", url, cookies=owner.engine_cookies, headers=bad, json=body)
        assert r.status_code == 403 and "cross-origin" in r.json()["error"], (bad, r.text)
    r = owner.call("PUT", url, cookies=owner.engine_cookies, headers={"Origin": origin},
                   json=body)
    assert r.status_code == 201, r.text
    assert (port_world.api.settings.projects_dir / str(port_world.pid) / "through-origin.txt") \
        .read_text() == "hello"
    # WebSockets too: the kernel channels only from the engine's own pages
    ws = TestClient(port_world.api.client.app)
    cookie = "; ".join("%s=%s" % kv for kv in owner.engine_cookies.items())
    kernels = owner.call("GET", origin + "/api/v1/sessions/%d/engine/api/kernels" % port_session,
                         cookies=owner.engine_cookies).json()
    channels = origin.replace("http", "ws") + "/api/v1/sessions/%d/engine/api/kernels/%s/" \
        "channels" % (port_session, kernels[0]["id"])
    with pytest.raises(WebSocketDisconnect) as refused:
        with ws.websocket_connect(channels, headers={"Cookie": cookie,
                                                     "Origin": "http://testserver"}):
            pass
    assert refused.value.code == 1008
    with ws.websocket_connect(channels, headers={"Cookie": cookie, "Origin": origin}) as conn:
        conn.send_json({"header": {"msg_id": "m1", "msg_type": "kernel_info_request",
                                   "username": "", "session": "s1", "version": "5.3",
                                   "date": ""}, "parent_header": {}, "metadata": {},
                        "content": {}, "channel": "shell", "buffers": []})
        for _ in range(20):
            msg = conn.receive_json()
            if msg.get("msg_type") == "kernel_info_reply":
                break
        assert msg.get("msg_type") == "kernel_info_reply", msg


def test_launch_tokens_work_once_for_their_own_session_and_user(port_world: World,
                                                                port_session: int) -> None:
    owner = Browser(port_world.api, port_world.owner)
    r = owner.workbench("POST", "/api/v1/sessions/%d/engine-access" % port_session, json={})
    url = r.json()["url"]
    assert owner.call("GET", url).status_code == 303
    again = owner.call("GET", url)
    assert again.status_code == 401 and "used already" in again.json()["error"]
    # a token for this session does not open another session's path
    token = url.split("token=")[1].split("&")[0]
    other = owner.call("GET", "http://testserver:%d/api/v1/sessions/%d/engine-launch?token=%s"
                       % (ENGINE_PORT, port_session + 1000, token))
    assert other.status_code in (401, 404)
    # the launch exchange exists on the engine origin only
    r = owner.workbench("POST", "/api/v1/sessions/%d/engine-access" % port_session, json={})
    wb_launch = owner.call("GET", r.json()["url"].replace(":%d" % ENGINE_PORT, ""),
                           cookies={"cdsw_session": owner.workbench_cookie})
    assert wb_launch.status_code == 404
    # strangers and collaborators without a share get no launch URL; a forged token fails
    contrib = Browser(port_world.api, port_world.contrib)
    r = contrib.workbench("POST", "/api/v1/sessions/%d/engine-access" % port_session, json={})
    assert r.status_code == 403, r.text
    forged = url.split("token=")[0] + "token=launch.%d.%d.0.9999999999.00.AAAA&next=lab" % (
        port_session, port_world.contrib.id)
    assert owner.call("GET", forged).status_code == 401
    # the path to open is relative to the engine, nowhere else
    for bad in ("https://evil.example/x", "../../../account/api-keys", "lab\r\nX-Evil: 1"):
        r = owner.workbench("POST", "/api/v1/sessions/%d/engine-access" % port_session,
                            json={"path": bad})
        assert r.status_code == 422, (bad, r.text)
    r = owner.workbench("POST", "/api/v1/sessions/%d/engine-access" % port_session,
                        json={"path": "//lab"})  # stays under the session's engine path
    launch = owner.call("GET", r.json()["url"])
    assert launch.headers["location"] == "/api/v1/sessions/%d/engine/lab" % port_session


def test_signing_out_or_losing_the_share_ends_engine_access(port_world: World,
                                                            port_session: int) -> None:
    base = "/api/v1/sessions/%d" % port_session
    status = "http://testserver:%d%s/engine/api/status" % (ENGINE_PORT, base)
    owner = Browser(port_world.api, port_world.owner)
    owner.open_engine(port_session)
    assert owner.call("GET", status, cookies=owner.engine_cookies).status_code == 200
    assert owner.workbench("POST", "/api/v1/auth/signout").status_code in (200, 204)
    assert owner.call("GET", status, cookies=owner.engine_cookies).status_code == 401



def test_port_mode_opens_engine_pages_of_ones_own_sessions_only(port_world: World,
                                                                port_session: int) -> None:
    """Every session's pages share the engine port's origin: a page of a session shared with
    you could reach your own sessions' engines there. So, in port mode, someone else's session
    is used through the workbench (console, terminal), not through its engine pages."""
    base = "/api/v1/sessions/%d" % port_session
    key = port_world.c["owner"]
    r = key.put(base + "/shares/%d" % port_world.contrib.id, json={"mode": "interactive"})
    assert r.status_code == 200, r.text
    try:
        contrib = Browser(port_world.api, port_world.contrib)
        r = contrib.workbench("POST", base + "/engine-access", json={})
        assert r.status_code == 403 and "subdomain" in r.json()["error"], r.text
        r = contrib.workbench("POST", base + "/terminals")
        assert r.status_code == 201, r.text  # the shared session itself still works
    finally:
        assert key.delete(base + "/shares/%d" % port_world.contrib.id).status_code == 204


def test_api_keys_still_reach_the_engine_on_the_workbench_origin(port_world: World,
                                                                 port_session: int) -> None:
    """Scripts keep working: a Bearer API key is never sent by a browser on its own."""
    r = port_world.c["owner"].get("/api/v1/sessions/%d/engine/api/status" % port_session)
    assert r.status_code == 200 and "kernels" in r.json(), r.text


APP_CODE = """
import asyncio, os, socket, threading
import tornado.web, tornado.websocket

class Page(tornado.web.RequestHandler):
    def get(self, rest):
        credentials = [h for h in ("Authorization", "Cookie") if h in self.request.headers]
        self.write("web app sees /%s%s" % (rest, " and %s" % credentials if credentials else ""))

    def post(self, rest):
        self.write("posted " + self.request.body.decode())

class Echo(tornado.websocket.WebSocketHandler):
    def on_message(self, message):
        self.write_message("echo: " + message)

s = socket.socket(); s.bind(("127.0.0.1", 0)); APP = s.getsockname()[1]; s.close()
ready = threading.Event()

def serve():
    asyncio.set_event_loop(asyncio.new_event_loop())
    tornado.web.Application([(r"/ws", Echo), (r"/(.*)", Page)]).listen(APP, "127.0.0.1")
    ready.set()
    asyncio.get_event_loop().run_forever()

threading.Thread(target=serve, daemon=True).start()
ready.wait(10)
print("app", APP, os.environ["CDSW_APP_PORT"], os.environ["CDSW_APP_PATH"])
"""


def test_a_web_app_the_session_serves_is_reached_on_the_engine_origin(port_world: World,
                                                                      port_session: int) -> None:
    """A web app in the session (here on a free port: local engines share the host's ports;
    in a container it is CDSW_APP_PORT) is served under proxy/PORT/, HTTP and websockets, to
    the engine credential or an API key of someone who may use the session, never without; the
    app itself is handed none of these credentials, nor the engine's own token."""
    out = port_world.execute(port_session, APP_CODE)
    text = "".join(e.get("text", "") for e in out if e.get("type") == "stream")
    _, app, app_port, app_path = text.split()
    base = "/api/v1/sessions/%d/engine/" % port_session
    assert (app_port, app_path) == ("8100", base + "proxy/8100/"), text
    proxied = base + "proxy/%s/" % app

    # a script with an API key, on the workbench's address
    r = port_world.c["owner"].get(proxied + "plots/1?x=2")
    assert r.status_code == 200 and r.text == "web app sees /plots/1", r.text
    r = port_world.c["owner"].post(proxied + "form", content=b"x=1")
    assert r.status_code == 200 and r.text == "posted x=1", r.text
    # the browser: "Web app" opens it on the engine origin with the engine cookie
    owner = Browser(port_world.api, port_world.owner)
    origin, launch = owner.open_engine(port_session, "proxy/%s/" % app)
    assert launch.headers["location"] == proxied
    r = owner.call("GET", origin + proxied, cookies=owner.engine_cookies)
    assert r.status_code == 200 and r.text == "web app sees /", r.text
    ws = TestClient(port_world.api.client.app)
    with ws.websocket_connect(origin.replace("http", "ws") + proxied + "ws",
                              headers={"Cookie": "; ".join("%s=%s" % kv for kv in
                                                           owner.engine_cookies.items()),
                                       "Origin": origin}) as conn:
        conn.send_text("hello")
        assert conn.receive_text() == "echo: hello"
    # without a credential, or with the workbench's own sign-in, the app is not reached
    assert owner.call("GET", origin + proxied).status_code == 401
    assert owner.call("GET", origin + proxied, cookies={"cdsw_session": owner.workbench_cookie}
                      ).status_code == 401
    # a viewer of the project may not use the session, so not its app either
    assert port_world.c["viewer"].get(proxied).status_code == 403


# --- subdomain mode ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sub_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = _world(tmp_path_factory.mktemp("engine-sub"), engine_origin="subdomain",
               domain="cdsw.example.com")
    yield w
    _close(w)


def test_subdomain_mode_serves_each_session_on_its_own_host(sub_world: World) -> None:
    first, second = sub_world.running(), sub_world.running()
    owner = Browser(sub_world.api, sub_world.owner)
    origin, _ = owner.open_engine(first)
    host = urlsplit(origin).netloc
    assert host.startswith("s-%d-" % first) and host.endswith(".cdsw.example.com"), origin
    base = "/api/v1/sessions/%d/engine/" % first
    r = owner.call("GET", origin + base + "api/status", cookies=owner.engine_cookies)
    assert r.status_code == 200, r.text
    # the host of one session serves no other session, no workbench API, no page
    for path in ("/api/v1/sessions/%d/engine/api/status" % second, "/api/v1/auth/me", "/"):
        r = owner.call("GET", origin + path, cookies=owner.engine_cookies)
        assert r.status_code == 404, (path, r.text)
    r = owner.call("POST", origin + "/model", json={"accessKey": "k", "request": {}})
    assert r.status_code == 404 and "engines only" in r.json()["error"], r.text
    # a made-up host for the session (wrong tag) is not its origin
    fake = "http://s-%d-000000000000.cdsw.example.com" % first
    assert owner.call("GET", fake + base + "api/status",
                      cookies=owner.engine_cookies).status_code == 404
    # the workbench on the domain itself: no engine content by cookie there
    r = owner.call("GET", "http://cdsw.example.com" + base + "api/status",
                   cookies={"cdsw_session": owner.workbench_cookie})
    assert r.status_code == 401
    second_origin, _ = owner.open_engine(second)
    assert second_origin != origin


def test_subdomain_mode_opens_shared_sessions_until_the_share_ends(sub_world: World) -> None:
    sid = sub_world.running()
    base = "/api/v1/sessions/%d" % sid
    key = sub_world.c["owner"]
    r = key.put(base + "/shares/%d" % sub_world.contrib.id, json={"mode": "interactive"})
    assert r.status_code == 200, r.text
    contrib = Browser(sub_world.api, sub_world.contrib)
    origin, _ = contrib.open_engine(sid)
    status = origin + base + "/engine/api/status"
    assert contrib.call("GET", status, cookies=contrib.engine_cookies).status_code == 200
    assert key.delete(base + "/shares/%d" % sub_world.contrib.id).status_code == 204
    assert contrib.call("GET", status, cookies=contrib.engine_cookies).status_code == 403
