"""What cm_deploy.py and ambari_deploy.py share: a JSON REST client whose every failure is one
line naming the call, and polling with a deadline."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Dict, Optional, Tuple

import requests


class DeployError(Exception):
    """Ends the deployment; str() is the one line shown to the admin."""


class RestClient:
    def __init__(self, base_url: str, user: str, password: str, timeout: float = 30.0,
                 verify: Any = True, headers: Optional[Dict[str, str]] = None):
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.auth = (user, password)
        self.session.verify = verify
        self.session.headers.update({"Accept": "application/json"})
        self.session.headers.update(headers or {})

    def call(self, method: str, path: str, body: Any = None,
             params: Optional[Dict[str, str]] = None,
             ok: Tuple[int, ...] = (200, 201, 202, 204)) -> Tuple[int, Any]:
        url = self.base + path
        try:
            resp = self.session.request(method, url, json=body, params=params,
                                        timeout=self.timeout)
        except requests.Timeout:
            raise DeployError("%s %s: no answer within %gs (is the server up and reachable?)"
                              % (method, url, self.timeout)) from None
        except requests.ConnectionError as e:
            raise DeployError("%s %s: cannot connect: %s" % (method, url, _short(e))) from None
        try:
            data = resp.json() if resp.content else None
        except ValueError:
            data = resp.text
        if resp.status_code not in ok:
            raise DeployError("%s %s: HTTP %d: %s" % (method, url, resp.status_code,
                                                      error_message(data, resp.reason)))
        return resp.status_code, data

    def get(self, path: str, **kw: Any) -> Any:
        return self.call("GET", path, **kw)[1]

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("POST", path, body, **kw)[1]

    def put(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("PUT", path, body, **kw)[1]


def error_message(data: Any, reason: str) -> str:
    """The first line of the server's own message in an error answer, else the reason."""
    if isinstance(data, dict):
        for key in ("message", "error", "detail"):
            if data.get(key):
                return str(data[key]).splitlines()[0][:300]
    if isinstance(data, str) and data.strip():
        return data.strip().splitlines()[0][:300]
    return reason or "no message"


def _short(e: Exception) -> str:
    text = str(e)
    return text.split("Caused by")[-1].strip(" ()'\"")[:200] if text else type(e).__name__


def wait_for(what: str, probe: Callable[[], Tuple[bool, str]], timeout: float,
             interval: float = 2.0) -> None:
    """Call probe until it says done; print its progress when it changes."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        done, progress = probe()
        if progress != last:
            say("%s: %s" % (what, progress))
            last = progress
        if done:
            return
        if time.monotonic() > deadline:
            raise DeployError("%s did not finish within %ds (last: %s)" % (what, timeout, progress))
        time.sleep(interval)


def say(line: str) -> None:
    print(line, flush=True)


def read_password(path: Optional[str], env_var: str) -> str:
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError as e:
            raise DeployError("cannot read password file %s: %s" % (path, e.strerror)) from None
    value = os.environ.get(env_var)
    if not value:
        raise DeployError("no password: pass --password-file FILE or set %s" % env_var)
    return value


def parse_pairs(pairs: Any, what: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise DeployError("%s %r: expected KEY=VALUE" % (what, pair))
        key, value = pair.split("=", 1)
        out[key.strip()] = value
    return out


def run_main(main: Callable[[], int]) -> None:
    try:
        sys.exit(main())
    except DeployError as e:
        print("error: %s" % e, file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
