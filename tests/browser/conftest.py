"""Browser fixtures: the server in its own process, Debian's Chromium driven by Playwright
(never Playwright's own browser download), a page per test that fails on any console error
and leaves a screenshot in test-artifacts/ when a step fails."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Pattern

import pytest
import requests

from ..conftest import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 800}


@dataclass
class Server:
    url: str
    engine_url: str  # the engine-content listener, another origin (engine_origin=port); in
    # subdomain mode the workbench's own URL, as each session gets a host of its own
    proc: subprocess.Popen  # type: ignore[type-arg]
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: Path, engine_origin: str = "port",
                 settings: Optional[Dict[str, Any]] = None) -> Iterator[Server]:
    """The workbench in its own process; engine_origin "subdomain" serves it at
    localhost (Chromium resolves every *.localhost to loopback) with a host per session;
    settings: more settings for it (JSON values)."""
    port, engine_port = _free_port(), _free_port()
    log = tmp / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSW_")}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.browser.server", str(tmp / "data"),
                                 str(port), str(engine_port), engine_origin,
                                 json.dumps(settings or {})], cwd=str(ROOT),
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    host = "localhost" if engine_origin == "subdomain" else "127.0.0.1"
    url = "http://%s:%d" % (host, port)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail("the test server exited: %s" % log.read_text()[-3000:])
        try:
            if requests.get(url + "/healthz", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the test server did not answer within 60 s: %s" % log.read_text()[-3000:])
        time.sleep(0.2)
    engine_url = url if engine_origin == "subdomain" else "http://%s:%d" % (host, engine_port)
    yield Server(url, engine_url, proc, log)
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start_server(tmp_path_factory.mktemp("browser"))


# package, not session: Playwright's sync API keeps an asyncio loop running in the main thread
# while it is open, and every later test's asyncio.run would refuse to start
@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail("%s is missing: install chromium (scripts/ci/setup_host.sh does)" % CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@dataclass
class Console:
    """Console errors and uncaught exceptions of a page. A test that provokes an API error on
    purpose (a wrong password) declares the browser's own 'Failed to load resource' line for
    that status with allow(); everything else fails the test."""
    errors: List[str] = field(default_factory=list)
    allowed: List[Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> List[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser: object, server: Server, console: Console,
         request: pytest.FixtureRequest) -> Iterator[object]:
    context = browser.new_context(base_url=server.url, viewport=VIEWPORT)  # type: ignore[attr-defined]
    context.set_default_timeout(15000)
    pg = context.new_page()
    pg.on("console", lambda m: console.errors.append("console %s: %s (%s)" % (m.type, m.text, pg.url))
          if m.type == "error" else None)
    pg.on("pageerror", lambda e: console.errors.append("uncaught: %s (%s)" % (e, pg.url)))
    yield pg
    call = getattr(request.node, "rep_call", None)
    if call is not None and call.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / ("FAILED-%s.png" % request.node.name)), full_page=True)
    context.close()
    if call is not None and call.passed:
        unexpected = console.unexpected()
        assert not unexpected, "browser console errors: %s" % unexpected


def screenshot(page: object, name: str) -> None:
    """A picture of a main page for the test artifacts."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / (name + ".png")))  # type: ignore[attr-defined]


def sign_in(page: object, username: str, password: str = PASSWORD) -> None:
    page.goto("/signin")  # type: ignore[attr-defined]
    page.get_by_label("Username").fill(username)  # type: ignore[attr-defined]
    page.get_by_label("Password").fill(password)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]
    page.wait_for_url("**/projects")  # type: ignore[attr-defined]
