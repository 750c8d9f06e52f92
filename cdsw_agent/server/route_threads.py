"""Where a `def` route's work runs: quick routes in a small thread pool of their own.

FastAPI runs a `def` route in anyio's shared pool (40 threads), where the routes that block on
something slow also run (a git clone, an LDAP bind, a Docker call, an upload to disk). Routes
whose work is a few database reads and some Python, marked `@quick`, run instead in a pool of
their own, one per event loop, of `api_quick_threads` threads (4). Under many concurrent calls
the master is bound by the interpreter lock, not by its cores: 40 threads each taking it for a
moment starve the event loop that parses requests and writes answers, and fewer threads
answered more calls (benchmarks/README.md, issue 14). A slow route would hold the small pool,
which is why routes are quick only when marked, and a route that may wait on the network, the
disk or a lock it does not own must not be. Where the database is far away each quick call
waits for its queries, and more threads keep them coming: that is what the setting is for.

A quick route is awaited on the event loop (FastAPI sees an `async def`) and makes one hop to
its pool for its whole work, permission decision included (permissions.decide_in_route_thread);
its answer's response_model check then runs on the event loop, where a `def` route's takes a
second hop.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, TypeVar

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

_threads = {"size": 4}  # setting api_quick_threads, by configure()
_limiter: RunVar[anyio.CapacityLimiter] = RunVar("cdsw_quick_route_limiter")

F = TypeVar("F", bound=Callable[..., Any])


def quick(endpoint: F) -> F:
    """Marks a `def` route whose work is database reads and Python only (see the module)."""
    endpoint.quick_route = True  # type: ignore[attr-defined]
    return endpoint


def is_quick(endpoint: Callable[..., Any]) -> bool:
    return bool(getattr(endpoint, "quick_route", False))


def configure(threads: int) -> None:
    """The quick routes' pool size (setting api_quick_threads), for the event loops that have
    not served one yet: the master sets it before it serves."""
    _threads["size"] = threads


def pool_size() -> int:
    return _threads["size"]


def limiter() -> anyio.CapacityLimiter:
    """The quick routes' pool of this event loop."""
    try:
        return _limiter.get()
    except LookupError:
        pool = anyio.CapacityLimiter(pool_size())
        _limiter.set(pool)
        return pool


def in_quick_pool(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """`endpoint` (a `def`) as an `async def` with the same signature that runs it in the quick
    routes' pool. FastAPI calls an endpoint with keyword arguments only."""
    if inspect.iscoroutinefunction(endpoint):
        raise TypeError("%s is async already: @quick is for def routes" % endpoint.__name__)

    @functools.wraps(endpoint)  # FastAPI reads the annotations in endpoint's module
    async def run_quick(**kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(functools.partial(endpoint, **kwargs),
                                              limiter=limiter())

    run_quick.__signature__ = inspect.signature(endpoint)  # type: ignore[attr-defined]
    return run_quick
