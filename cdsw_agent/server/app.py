"""The master's web application: REST API under /api/v1, health, and (later) pages."""

from __future__ import annotations

import importlib
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict, Optional

import anyio
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..models import service as model_service
from ..settings import Settings
from ..store.db import Database
from . import ams_push, engine_access, errors, request_metrics
from . import scheduler as job_scheduler
from .routes.model_endpoint import ModelFrontDoor
from .state import ServerState
from .worker_services import REPORTER_KEY

API_PREFIX = "/api/v1"
# route modules under cdsw_agent/server/routes, each exposing `router`
API_ROUTERS = ("auth", "account", "users", "teams", "projects", "files", "admin", "cluster", "jobs",
               "sessions", "engine", "experiments", "models", "clusters", "promotions")
ROOT_ROUTERS = ("health", "metrics", "model_endpoint",  # model_endpoint: POST /model
                "mlflow",  # the MLflow tracking API at /mlflow
                "inference_v2")  # the Open Inference Protocol at /v2


def security_headers(hsts: bool) -> Dict[bytes, bytes]:
    """The headers every answer of the master carries."""
    headers = {b"x-content-type-options": b"nosniff", b"x-frame-options": b"DENY",
               b"referrer-policy": b"same-origin"}
    if hsts:
        headers[b"strict-transport-security"] = b"max-age=31536000"
    return headers


class SecurityHeaders:
    """Pure ASGI middleware adding the security headers every answer carries (and no-store on
    the API). `@app.middleware("http")` would wrap each response in a streaming copy through
    a task group: measurable on the model hot path."""

    def __init__(self, app: ASGIApp, hsts: bool) -> None:
        self.app = app
        self.headers = headers = security_headers(hsts)
        self.api_headers = {**headers, b"cache-control": b"no-store"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        add = self.api_headers if path.startswith(API_PREFIX) \
            and path != API_PREFIX + "/docs" else self.headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers.extend((k, v) for k, v in add.items() if k not in present)
                message = dict(message, headers=headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class MasterApp(FastAPI):
    """The FastAPI application, with POST /model answered before its middleware stack: the
    model hot path (routes/model_endpoint.ModelFrontDoor) crosses no middleware, no router and
    no dependency; everything else, and what the front door does not take, goes through
    FastAPI as usual."""

    front_door: Optional[ModelFrontDoor] = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        door = self.front_door
        if door is not None and scope["type"] == "http" and door.takes(scope):
            scope["app"] = self
            await door(scope, receive, send, super().__call__)
            return
        await super().__call__(scope, receive, send)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    reporter = app.state.server.extras.get(REPORTER_KEY)
    if reporter is not None:  # an HTTP worker: the loops run in the controller
        await anyio.to_thread.run_sync(reporter.first)  # the routing table, before serving
        reporter.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(reporter.stop)
            await model_service.service_for(app.state.server).router.aclose()
        return
    # the job scheduler runs in the master process (one master per workbench)
    job_scheduler.start(app.state.server)
    ams_push.start(app.state.server)  # to Ambari Metrics, when a collector is configured
    try:
        yield
    finally:
        ams_push.stop(app.state.server)
        job_scheduler.stop(app.state.server)
        models = app.state.server.extras.get(model_service.SERVICE_KEY)
        if models is not None:  # the keep-alive connections to the replicas
            await models.router.aclose()


def _api_docs(app: FastAPI, path: str) -> None:
    """Swagger UI at `path`, its JavaScript and CSS from the npm package `swagger-ui-dist`
    under /vendor (FastAPI's default loads them from a CDN: a blank page on an air-gapped site)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from starlette.requests import Request
    from starlette.responses import HTMLResponse

    from ..web import assets

    async def docs(_: Request) -> HTMLResponse:
        if not (assets.VENDOR_DIR / "swagger-ui-dist" / "swagger-ui-bundle.js").is_file():
            return HTMLResponse("<p>The interactive API documentation needs the npm package "
                                "swagger-ui-dist: %s. The OpenAPI document is at "
                                "<a href='%s'>%s</a>.</p>" % (assets.INSTALL_HINT, app.openapi_url,
                                                             app.openapi_url), status_code=503)
        return get_swagger_ui_html(openapi_url=app.openapi_url or "", title=app.title + " - docs",
                                   swagger_js_url="/vendor/swagger-ui-dist/swagger-ui-bundle.js",
                                   swagger_css_url="/vendor/swagger-ui-dist/swagger-ui.css",
                                   swagger_favicon_url="/static/img/logo.svg")

    app.add_route(path, docs, include_in_schema=False)
    app.docs_url = path  # what the permission walker knows as the (public) docs page


def create_app(settings: Settings, db: Optional[Database] = None,
               controller: Optional[Any] = None) -> FastAPI:
    """The master's application; with `controller` (a ControllerClient), an HTTP worker's of a
    master with several (server/controller.py)."""
    app = MasterApp(
        lifespan=_lifespan,
        title="CDSW workbench API",
        version=__version__,
        openapi_url=API_PREFIX + "/openapi.json",
        docs_url=None,  # served by _api_docs from the packaged Swagger UI, not a CDN
        redoc_url=None,
    )
    _api_docs(app, API_PREFIX + "/docs")
    app.state.server = ServerState.create(settings, db)
    if controller is not None:
        from .worker_services import install

        install(app.state.server, controller)
    errors.install(app)
    # innermost first
    app.add_middleware(SecurityHeaders, hsts=settings.tls_enable)
    stats = request_metrics.install(app)  # times every request for /metrics
    engine_access.install(app, settings)  # engine content on its own origin
    for name in API_ROUTERS:
        app.include_router(importlib.import_module("cdsw_agent.server.routes." + name).router,
                           prefix=API_PREFIX)
    for name in ROOT_ROUTERS:
        app.include_router(importlib.import_module("cdsw_agent.server.routes." + name).router)
    importlib.import_module("cdsw_agent.web").install(app)  # pages, static files, page errors
    # POST /model, before all of the above (it adds their headers and metrics itself)
    app.front_door = ModelFrontDoor(app.state.server,
                                    list(security_headers(settings.tls_enable).items()), stats)
    return app
