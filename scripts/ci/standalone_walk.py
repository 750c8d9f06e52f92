#!/usr/bin/env python3
"""An evaluator's walk through a running workbench, through its API: sign in, create a project,
start a session, execute `1+1`, run a job, stop the session. Prints one line per step with its
time; exits non-zero at the first step that fails, saying why.

Usage: standalone_walk.py --base http://127.0.0.1:8080 --password PASSWORD [--user admin]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable, Dict

import requests

TIMEOUT = 30


class WalkFailed(Exception):
    pass


def check(r: requests.Response, *codes: int) -> Any:
    if r.status_code not in codes:
        raise WalkFailed("%s %s answered %d: %s" % (r.request.method, r.url, r.status_code,
                                                    r.text[:300]))
    if not r.headers.get("content-type", "").startswith("application/json"):
        return None
    return r.json() if r.content else None


def wait(what: str, probe: Callable[[], Dict[str, Any]], done: Callable[[Dict[str, Any]], bool],
         seconds: float) -> Dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise WalkFailed("%s: not done after %.0f s: %s" % (what, seconds, value))
        time.sleep(1)


def walk(base: str, user: str, password: str, session_seconds: float) -> None:
    s = requests.Session()
    started = time.monotonic()

    def step(name: str, fn: Callable[[], str]) -> None:
        t = time.monotonic()
        detail = fn()
        print("walk: %-22s ok in %6.1f s  %s" % (name, time.monotonic() - t, detail), flush=True)

    def signin() -> str:
        body = check(s.post(base + "/api/v1/auth/signin",
                            json={"username": user, "password": password}, timeout=TIMEOUT), 200)
        s.headers["X-CSRF-Token"] = body["csrf_token"]
        return "as %s" % user

    state: Dict[str, Any] = {}

    def project() -> str:
        p = check(s.post(base + "/api/v1/projects", json={"name": "walk-%d" % time.time(),
                                                          "template": "python"},
                         timeout=TIMEOUT), 201, 200)
        state["pid"] = p["id"]
        return "project %d" % p["id"]

    def session() -> str:
        r = check(s.post(base + "/api/v1/projects/%d/sessions" % state["pid"], json={},
                         timeout=TIMEOUT), 201)
        state["sid"] = r["id"]
        final = wait("session %d" % r["id"],
                     lambda: check(s.get(base + "/api/v1/sessions/%d" % r["id"],
                                         timeout=TIMEOUT), 200),
                     lambda v: v["status"] not in ("starting", "pending", "queued"),
                     session_seconds)
        if final["status"] != "running":
            raise WalkFailed("session %d is %s: %s" % (r["id"], final["status"], final))
        return "session %d running" % r["id"]

    def execute() -> str:
        with s.post(base + "/api/v1/sessions/%d/execute" % state["sid"], json={"code": "1+1"},
                    stream=True, timeout=120) as r:
            check(r, 200)
            events = [json.loads(line) for line in r.iter_lines() if line]
        results = [e for e in events if e.get("type") == "execute_result"]
        if not results or results[0]["data"].get("text/plain") != "2":
            raise WalkFailed("1+1 did not give 2: %s" % events)
        return "1+1 = 2"

    def job() -> str:
        pid = state["pid"]
        check(s.put(base + "/api/v1/projects/%d/files/content" % pid,
                    json={"path": "walk.py", "content": "print('walk job', 6 * 7)\n"},
                    timeout=TIMEOUT), 200, 201, 204)
        j = check(s.post(base + "/api/v1/projects/%d/jobs" % pid,
                         json={"name": "walk", "script": "walk.py"}, timeout=TIMEOUT), 201, 200)
        run = check(s.post(base + "/api/v1/projects/%d/jobs/%d/runs" % (pid, j["id"]),
                           timeout=TIMEOUT), 201, 200, 202)
        url = base + "/api/v1/projects/%d/jobs/%d/runs/%d" % (pid, j["id"], run["id"])
        final = wait("job run %d" % run["id"], lambda: check(s.get(url, timeout=TIMEOUT), 200),
                     lambda v: v["status"] not in ("queued", "scheduled", "starting", "running"),
                     session_seconds)
        text = s.get(url + "/log", timeout=TIMEOUT).text
        if final["status"] != "succeeded" or "walk job 42" not in text:
            raise WalkFailed("job run %d is %s; log: %s" % (run["id"], final["status"],
                                                            text[-300:]))
        return "run %d succeeded" % run["id"]

    def stop() -> str:
        sid = state["sid"]
        check(s.post(base + "/api/v1/sessions/%d/stop" % sid, timeout=TIMEOUT), 200, 202)
        final = wait("stopping session %d" % sid,
                     lambda: check(s.get(base + "/api/v1/sessions/%d" % sid,
                                         timeout=TIMEOUT), 200),
                     lambda v: v["status"] in ("stopped", "failed", "succeeded"), 60)
        return "session %d %s" % (sid, final["status"])

    for name, fn in (("sign in", signin), ("create project", project),
                     ("start session", session), ("execute 1+1", execute), ("run job", job),
                     ("stop session", stop)):
        step(name, fn)
    print("walk: all steps ok in %.1f s" % (time.monotonic() - started), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="http://127.0.0.1:8080")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", required=True)
    parser.add_argument("--session-seconds", type=float, default=300,
                        help="how long a session or job may take to start and finish")
    args = parser.parse_args()
    try:
        walk(args.base.rstrip("/"), args.user, args.password, args.session_seconds)
    except (WalkFailed, requests.RequestException, KeyError, ValueError) as e:
        print("walk: FAILED: %s" % e, file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
