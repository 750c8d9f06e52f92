"""sessions/engine_origin.py without a server: which origin a request came to, what an engine
origin may answer, and the engine credentials (signature, purpose, session, expiry)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cdsw_agent.sessions import engine_origin as eo

from ..conftest import make_settings


def scope(host: str, port: int = 8080, path: str = "/") -> Any:
    return {"type": "http", "path": path, "server": ("10.0.0.1", port),
            "headers": [(b"host", host.encode())]}


def test_port_mode_tells_the_engine_listener_by_its_local_port(tmp_path: Path) -> None:
    s = make_settings(tmp_path, http_port=8080, engine_port=8081)
    assert eo.classify(scope("cdsw.example.com:8081", 8081), s).engine
    assert not eo.classify(scope("cdsw.example.com:8080", 8080), s).engine
    # a forged Host header does not make the workbench port an engine origin
    assert not eo.classify(scope("cdsw.example.com:8081", 8080), s).engine
    off = make_settings(tmp_path, engine_port=0)
    assert not eo.classify(scope("x:0", 0), off).engine


def test_subdomain_mode_routes_by_host(tmp_path: Path) -> None:
    s = make_settings(tmp_path, engine_origin="subdomain", domain="cdsw.example.com")
    where = eo.classify(scope("s-12-0123456789ab.cdsw.example.com:8080"), s)
    assert where.engine and where.session_id == 12
    for host in ("cdsw.example.com", "s-12-0123456789ab.evil.com",
                 "s-12-0123456789ab.x.cdsw.example.com", "a.s-12-0123456789ab.cdsw.example.com",
                 "s-12-0123456789ab.cdsw.example.com.evil.com", "s-0-0123456789ab.cdsw.example.com"):
        assert not eo.classify(scope(host), s).engine, host
    host = eo.engine_host(s.data_dir, s.domain, 12, "session-12-abc")
    assert host.startswith("s-12-") and eo.classify(scope(host), s).session_id == 12
    assert host != eo.engine_host(s.data_dir, s.domain, 12, "session-12-other")
    url = eo.engine_origin_url(s, 12, "session-12-abc", "cdsw.example.com", 8080)
    assert url == "http://%s:8080" % host
    assert eo.allowed_on_engine_origin(where, "/api/v1/sessions/12/engine/lab")
    assert eo.allowed_on_engine_origin(where, "/api/v1/sessions/12/engine-launch")
    assert not eo.allowed_on_engine_origin(where, "/api/v1/sessions/13/engine/lab")
    for path in ("/api/v1/auth/me", "/", "/api/v1/sessions/12", "/api/v1/sessions/12/engineX",
                 "/static/js/app.js", "/api/v1/sessions/12/terminals/1/websocket"):
        assert not eo.allowed_on_engine_origin(where, path), path


def test_credentials_are_bound_to_purpose_session_workload_and_time(tmp_path: Path) -> None:
    d = tmp_path
    token = eo.mint(d, "launch", 7, "session-7-a", user_id=3, web_session_id=9, now=1000)
    claims = eo.verify(d, token, "launch", 7, "session-7-a", now=1000 + eo.LAUNCH_SECONDS)
    assert claims is not None and (claims.user_id, claims.web_session_id) == (3, 9)
    assert eo.verify(d, token, "launch", 7, "session-7-a", now=1001 + eo.LAUNCH_SECONDS) is None
    assert eo.verify(d, token, "cookie", 7, "session-7-a", now=1000) is None
    assert eo.verify(d, token, "launch", 8, "session-7-a", now=1000) is None
    assert eo.verify(d, token, "launch", 7, "session-7-b", now=1000) is None  # id reused
    tampered = token.replace("launch.7.3.", "launch.7.4.")
    assert eo.verify(d, tampered, "launch", 7, "session-7-a", now=1000) is None
    cookie = eo.mint(d, "cookie", 7, "session-7-a", 3, 9, now=1000)
    assert eo.verify(d, cookie, "cookie", 7, "session-7-a", now=1000 + eo.COOKIE_SECONDS)
    assert eo.verify(d, "", "cookie", 7, "session-7-a") is None
    used = eo._UsedLaunches()
    fresh = eo.verify(d, eo.mint(d, "launch", 7, "session-7-a", 3, 9), "launch", 7, "session-7-a")
    assert fresh is not None and used.first_use(fresh.nonce, fresh.expires)
    assert not used.first_use(fresh.nonce, fresh.expires)


def test_next_paths_and_hosts(tmp_path: Path) -> None:
    assert eo.safe_next("lab") == "lab" and eo.safe_next("/tree/x") == "tree/x"
    for bad in ("../x", "https://evil", "lab?x=1", "a/../../b", "lab\r\n"):
        assert eo.safe_next(bad) is None, bad
    assert eo.split_host("cdsw.example.com:8080") == ("cdsw.example.com", 8080)
    assert eo.split_host("[::1]:8081") == ("::1", 8081)
    assert eo.split_host("localhost") == ("localhost", None)


def test_the_master_listens_on_the_engine_port_and_says_when_it_is_taken(tmp_path: Path) -> None:
    import socket

    from cdsw_agent.roles.master import prepare
    from cdsw_agent.server import listen

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        s = make_settings(tmp_path / "data", bind_address="127.0.0.1", http_port=1,
                          engine_port=taken, storage_backend="local")
        assert any("engine content" in p and str(taken) in p for p in prepare(s))
    sub = make_settings(tmp_path, engine_origin="subdomain", engine_port=taken)
    assert listen.engine_listener_port(sub) == 0  # one port: hosts tell sessions apart
    socks = listen.sockets(make_settings(tmp_path, engine_port=0), "127.0.0.1", 0)
    try:
        assert len(socks) == 1
    finally:
        for sock in socks:
            sock.close()
