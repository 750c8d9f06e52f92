"""The Spark UI of a session, through the engine's own jupyter_server: CDSW's "Spark UI" tab.

A Spark driver started in the engine (pyspark, spark-shell, spark-submit in a terminal) serves its
UI on 127.0.0.1:4040 inside the engine's container (spark.ui.port; each engine has its own
network, so every session can use the same port). jupyter_server answers under
BASE_URL/cdsw/spark-ui/ with what the UI answers, after the same token check as every engine
request, so the master's router reaches it like the notebook API: nothing is published on the
node. Spark is told where it is seen from (the X-Forwarded-Context header, Spark's reverse proxy
support), so its links and redirects stay under that prefix.
"""

from __future__ import annotations

import os
from typing import Optional
from urllib.parse import urlsplit

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

PATH = "cdsw/spark-ui"
PORT_VARIABLE = "CDSW_SPARK_UI_PORT"  # the driver UI's port in the engine; 4040 by default
DEFAULT_PORT = 4040
DROP = {"content-length", "transfer-encoding", "connection", "set-cookie", "server"}


def ui_port() -> int:
    try:
        return int(os.environ.get(PORT_VARIABLE, "") or DEFAULT_PORT)
    except ValueError:
        return DEFAULT_PORT


def rewrite_location(location: str, prefix: str, port: int) -> str:
    """A redirect of the Spark UI, pointed under prefix."""
    parts = urlsplit(location)
    if parts.scheme and (parts.hostname not in ("127.0.0.1", "localhost") or
                         (parts.port or 80) != port):
        return location  # elsewhere: leave it
    path = parts.path or "/"
    if not path.startswith(prefix):
        path = prefix.rstrip("/") + "/" + path.lstrip("/")
    return path + ("?" + parts.query if parts.query else "")


class SparkUIHandler(JupyterHandler):
    """GET and HEAD under BASE_URL/cdsw/spark-ui/ forwarded to the driver's UI."""

    @property
    def prefix(self) -> str:
        return url_path_join(self.base_url, PATH)

    @web.authenticated
    async def get(self, path: str = "") -> None:
        await self._forward(path)

    @web.authenticated
    async def head(self, path: str = "") -> None:
        await self._forward(path)

    async def _forward(self, path: str) -> None:
        port = ui_port()
        url = "http://127.0.0.1:%d/%s" % (port, path)
        if self.request.query:
            url += "?" + self.request.query
        request = HTTPRequest(url, method=self.request.method, follow_redirects=False,
                              headers={"X-Forwarded-Context": self.prefix.rstrip("/"),
                                       "Accept": self.request.headers.get("Accept", "*/*")},
                              request_timeout=60)
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as e:
            self._no_ui(port, str(e))
            return
        if response.code == 599:  # tornado's "no connection"
            self._no_ui(port, str(response.error))
            return
        self.set_status(response.code, response.reason)
        for name, value in response.headers.get_all():
            if name.lower() in DROP:
                continue
            if name.lower() == "location":
                value = rewrite_location(value, self.prefix, port)
            self.set_header(name, value)
        if self.request.method != "HEAD" and response.body:
            self.write(response.body)

    def _no_ui(self, port: int, why: Optional[str]) -> None:
        self.set_status(503)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.write("No Spark application is running in this session (nothing answers on port "
                   "%d): start one, e.g. SparkSession.builder.getOrCreate(), then reload.\n" % port)
        self.log.debug("Spark UI: %s", why)

    def check_xsrf_cookie(self) -> None:  # GET and HEAD only: nothing changes state
        return None


def handlers(base_url: str) -> list:
    return [(url_path_join(base_url, PATH) + r"/?(.*)", SparkUIHandler)]
