"""The controller's socket application (server/controller.py ControlApp), driven as ASGI: the
token is required, unknown calls are 404, and a call's own errors (subclasses included) go back
as their kind, status and message, which the workers' client raises again as the same class."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Dict, List, Tuple

import pytest

from cdsw_agent.server import controller
from cdsw_agent.server.controller import ControlApp
from cdsw_agent.sessions.manager import SessionError

TOKEN = "t0ken"


class StaleSession(SessionError):
    """A subclass no table names: it goes as the first kind it is an instance of."""


def ask(app: ControlApp, path: str, body: Dict[str, Any], token: str = TOKEN
        ) -> Tuple[int, Dict[str, Any]]:
    data = json.dumps(body).encode()
    sent: List[Dict[str, Any]] = []

    async def receive() -> Dict[str, Any]:
        return {"type": "http.request", "body": data, "more_body": False}

    async def send(message: Dict[str, Any]) -> None:
        sent.append(message)
    scope = {"type": "http", "method": "POST", "path": path,
             "headers": [(b"authorization", ("Bearer " + token).encode())]}
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    return sent[0]["status"], json.loads(sent[1]["body"])


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> ControlApp:
    def stale(state: Any, session_id: int) -> None:
        raise StaleSession(410, "session %d is gone" % session_id)

    def broken(state: Any) -> None:
        raise RuntimeError("secret detail")
    monkeypatch.setitem(controller.CALLS, "test.stale", stale)
    monkeypatch.setitem(controller.CALLS, "test.broken", broken)
    monkeypatch.setitem(controller.CALLS, "test.add", lambda state, a, b: a + b)
    return ControlApp(None, object(), TOKEN)  # type: ignore[arg-type]


def test_answers_results_and_refuses_without_the_token(app: ControlApp) -> None:
    assert ask(app, "/call/test.add", {"a": 2, "b": 3}) == (200, {"result": 5})
    status, body = ask(app, "/call/test.add", {"a": 2, "b": 3}, token="wrong")
    assert status == 401 and "result" not in body
    assert ask(app, "/call/nothing", {})[0] == 404


def test_a_subclass_of_a_calls_error_goes_back_as_its_kind(app: ControlApp) -> None:
    status, body = ask(app, "/call/test.stale", {"session_id": 7})
    assert (status, body) == (200, {"error": {"kind": "session", "status": 410,
                                              "message": "session 7 is gone"}})
    again = controller.ERRORS[body["error"]["kind"]](410, body["error"]["message"])
    assert isinstance(again, SessionError) and again.status == 410  # what the worker raises


def test_an_unexpected_failure_keeps_its_details_in_the_controllers_log(
        app: ControlApp, caplog: pytest.LogCaptureFixture) -> None:
    status, body = ask(app, "/call/test.broken", {})
    assert status == 500 and "secret detail" not in json.dumps(body)
    assert "secret detail" in caplog.text
