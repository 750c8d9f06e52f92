"""The web UI: server-rendered pages (jinja2 templates), our own CSS/JS, and the browser
libraries installed by npm. Pages only read; every change goes through the JSON API under
/api/v1 from the page's JS, with the session's CSRF token."""

from __future__ import annotations

import importlib

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from . import assets, errors

PAGE_ROUTERS = ("auth", "projects", "files", "sessions", "jobs", "experiments", "models", "teams",
                "admin", "kerberos", "promotions")


def install(app: FastAPI) -> None:
    """Pages, static files and page-friendly errors; call after the API is set up."""
    errors.install(app)
    for name in PAGE_ROUTERS:
        app.include_router(importlib.import_module("cdsw_agent.web.pages." + name).router)
    # Static files are public by nature (no user data): the permission test allows these two
    # mounts by name. check_dir=False: without `npm ci` the pages still work and say what is missing.
    app.mount("/static", StaticFiles(directory=str(assets.STATIC_DIR)), name="static")
    app.mount("/vendor", StaticFiles(directory=str(assets.VENDOR_DIR), check_dir=False),
              name="vendor")
