"""permissions.decide_in_route_thread: which routes decide their `require` permission in their
own worker thread, and what FastAPI sees of them (the rule's behaviour on requests is tried in
tests/integration/test_request_auth.py)."""

from __future__ import annotations

import inspect

from fastapi import Depends, Query, Request

from cdsw_agent.server.deps import get_state
from cdsw_agent.server.permissions import (Access, AuthorizedRoute, Pending, api_router,
                                           decide_in_route_thread, require)


def listing(q: str = Query(default=""), access: Access = require("signed_in"),
            state: object = Depends(get_state)) -> list:
    return [q, access, state]


async def asynchronous(access: Access = require("signed_in")) -> list:
    return [access]


def public_page(q: str = "") -> str:
    return q


def test_a_def_route_gets_its_decision_as_a_pending_one_it_makes_first() -> None:
    wrapped = decide_in_route_thread(listing)
    assert wrapped is not listing and wrapped.__name__ == "listing"
    params = inspect.signature(wrapped).parameters
    assert list(params) == ["q", "access", "state"]
    access_dep = params["access"].default.dependency
    assert inspect.iscoroutinefunction(access_dep)  # no I/O before the route's thread
    assert access_dep.permission_action == "signed_in"  # what the permission matrix reads
    assert params["state"].default.dependency is get_state  # the rest as it was
    assert inspect.signature(wrapped).return_annotation == inspect.signature(listing) \
        .return_annotation

    decided = []

    def authorize(request: Request, db: object) -> str:
        decided.append((request, db))
        return "access"

    pending = Pending(authorize, "request", "db")  # type: ignore[arg-type]
    assert wrapped(q="x", access=pending, state="s") == ["x", "access", "s"]
    assert decided == [("request", "db")] and pending.access == "access"
    assert pending.decide("other db") == "access" and len(decided) == 1  # decided once


def test_async_routes_and_routes_without_require_are_left_as_they_are() -> None:
    assert decide_in_route_thread(asynchronous) is asynchronous
    assert decide_in_route_thread(public_page) is public_page


def test_every_router_of_the_app_uses_the_route_class() -> None:
    router = api_router(prefix="/x")
    router.get("/list")(listing)
    [route] = router.routes
    assert isinstance(route, AuthorizedRoute)
    assert route.dependant.call is not listing and not inspect.iscoroutinefunction(
        route.dependant.call)
    names = {d.call.__name__ for d in route.dependant.dependencies}
    assert "in_route_thread" in names and "dependency" not in names
