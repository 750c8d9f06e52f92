"""Per-user Kerberos on the swarm backend (issue 12): tickets from a real MIT KDC, obtained by
the master, reach engine containers only as their own user's cache, mounted read-only, and
engines authenticate with them to a real Kerberos-protected service.

alice's and bob's sessions, and a job bob runs in the same project, run on h1 (a network
namespace with its own dockerd and swarm). Inside each, KRB5CCNAME names a cache whose default
principal is that user's; the directory holds nothing else, cannot be written, and the other
user's cache is nowhere in the container (read with a few lines of Python: the MIT ccache
format's header, so the check does not depend on the tools under test). With the image's
Kerberos client (krb5-user, curl), `klist` shows the user's own principal and
`curl --negotiate -u :` reaches Apache httpd with mod_auth_gssapi on the test host, which answers
the principal it authenticated: alice@CDSW.TEST for alice's session, bob@CDSW.TEST for bob's job.

The KDC and httpd run on the test host; containers reach it at the lab bridge's address (h1's
default gateway; their traffic is masqueraded through h1), which the krb5.conf given to the
master and mounted into engines names. Their ports lie outside the ranges the engine firewall
drops (tests/integration/kdc.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from cdsw_agent.images import transfer
from cdsw_agent.kerberos import kdc as kdc_tools, tickets
from cdsw_agent.server import scheduler
from cdsw_agent.sessions.monitor import manager_for
from cdsw_agent.store.models import utcnow

from .docker_fixtures import docker_engine, engine_image, engine_image_build  # noqa: F401
from .kdc import curl_command, start_gss_httpd, start_kdc
from .netns import Lab, available
from .test_jobs_api import start_jobs
from .test_sessions_swarm import SwarmMaster, swarm_master
from .test_warm_engines import ready_engines, service_spec, workload_of

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

LIFETIME_SECONDS = 30
PASSWORDS = {"alice": "alice-Krb-pw1", "bob": "bob-Krb-pw2"}

READ_CACHE = r'''
import os, struct
path = os.environ["KRB5CCNAME"].split(":", 1)[1]
data = open(path, "rb").read()
assert data[0] == 5 and data[1] == 4, data[:2]  # MIT ccache version 4
at = 4 + struct.unpack(">H", data[2:4])[0]
name_type, count = struct.unpack(">II", data[at:at + 8]); at += 8
def counted():
    global at
    n = struct.unpack(">I", data[at:at + 4])[0]; at += 4
    value = data[at:at + n].decode(); at += n
    return value
realm = counted()
parts = [counted() for _ in range(count)]
folder = os.path.dirname(path)
try:
    open(os.path.join(folder, "x"), "w")
    writable = "yes"
except OSError as e:
    writable = "no: %s" % e.strerror
print("principal=%s@%s listing=%s writable=%s" % ("/".join(parts), realm,
      sorted(os.listdir(folder)), writable))
print("other=%s" % os.path.exists(OTHER))
'''

# the engine's own Kerberos client: its ticket, then the web service with it (SPNEGO)
KERBEROS_CLIENT = r'''
import subprocess
print(subprocess.run(["klist"], capture_output=True, text=True).stdout)
r = subprocess.run(CURL, capture_output=True, text=True)
print("web " + r.stdout.strip(), r.stderr.strip()[:300])
'''


@pytest.fixture(scope="module")
def master(engine_image: str, docker_engine: Any,  # noqa: F811
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    reason = available()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("krbswarm")
    kdc = start_kdc(root / "kdc")
    try:
        for name, password in PASSWORDS.items():
            kdc.add_principal(name, password)
        saved = transfer.save_image(docker_engine.client, engine_image, root / "engine.tar")
        with Lab(Path("/var/lib/cdsw-lab") / ("krb-" + os.urandom(3).hex())) as lab:
            # the test host on the lab's bridge: h1's default gateway, where its containers'
            # traffic to the KDC and the web service goes
            host = lab.prefix + ".1"
            conf = kdc.client_conf(root / "krb5-lab.conf", host)
            web = start_gss_httpd(kdc, host)
            try:
                # short tickets: the keeper must renew them while the sessions run
                m = swarm_master(lab, saved.path, engine_image, root / "data",
                                 kerberos_enabled=True, krb5_conf=str(conf),
                                 kerberos_ticket_lifetime="%ds" % LIFETIME_SECONDS,
                                 kerberos_renew_lifetime="10m", kerberos_check_seconds=2)
                try:
                    users = {name: m.api.user(name) for name in PASSWORDS}
                    clients = {name: m.api.key_client(u) for name, u in users.items()}
                    for name, user in users.items():
                        r = m.client.put("/api/v1/projects/%d/collaborators/%d"
                                         % (m.project_id, user.id), json={"role": "contributor"})
                        assert r.status_code == 200, r.text
                        r = clients[name].put("/api/v1/account/kerberos",
                                              data={"principal": name,
                                                    "password": PASSWORDS[name]})
                        assert r.status_code == 200, r.text
                    tickets.start(m.api.client.app.state.server)  # the master's keeper
                    yield {"m": m, "kdc": kdc, "web": web, "users": users, "clients": clients}
                finally:
                    state = m.api.client.app.state.server
                    tickets.stop(state)
                    scheduler.stop(state)
                    orch = manager_for(state).orchestrator
                    for ref in orch.list():
                        orch.remove(ref.id)
                    m.api.db.engine.dispose()
            finally:
                web.stop()
    finally:
        kdc.stop()


def _other_cache(master: Dict[str, Any], name: str) -> str:
    other = "bob" if name == "alice" else "alice"
    return str(tickets.cache_file(master["m"].api.settings, master["users"][other].id))


def _execute(master: Dict[str, Any], name: str, sid: int, code: str) -> str:
    with master["clients"][name].stream("POST", "/api/v1/sessions/%d/execute" % sid,
                                        json={"code": code}) as r:
        assert r.status_code == 200, r.read()
        return "".join(json.loads(line).get("text", "") for line in r.iter_lines() if line)


def _check_sessions(master: Dict[str, Any], sessions: Dict[str, int]) -> None:
    """Each session holds only its user's ticket, read-only, and authenticates as its user."""
    m: SwarmMaster = master["m"]
    for name, sid in sessions.items():
        running = m.wait(sid, "running", "failed")
        assert running["status"] == "running", running
        code = "OTHER = %r\nCURL = %r\n" % (_other_cache(master, name),
                                            curl_command(master["web"].url))
        text = _execute(master, name, sid, code + READ_CACHE + KERBEROS_CLIENT)
        assert ("principal=%s@CDSW.TEST listing=['krb5cc'] writable=no: Read-only file system"
                % name) in text, text
        assert "other=False" in text, text
        # klist in the engine: the user's own ticket-granting ticket
        assert "Default principal: %s@CDSW.TEST" % name in text, text
        assert "krbtgt/CDSW.TEST@CDSW.TEST" in text, text
        # the Kerberos-protected service authenticated this user, and no one else
        assert "web principal=%s@CDSW.TEST\nstatus=200" % name in text, \
            (text, master["web"].log())
        assert ("bob" if name == "alice" else "alice") not in text, text


def _start_sessions(master: Dict[str, Any]) -> Dict[str, int]:
    sessions = {}
    for name in PASSWORDS:
        r = master["clients"][name].post("/api/v1/projects/%d/sessions" % master["m"].project_id,
                                         json={})
        assert r.status_code == 201, r.text
        sessions[name] = r.json()["id"]
    return sessions


def _stop_sessions(m: SwarmMaster, sessions: Dict[str, int]) -> None:
    for sid in sessions.values():
        m.client.post("/api/v1/sessions/%d/stop" % sid)
    for sid in sessions.values():
        assert m.wait(sid, "stopped", "failed", timeout=60)["status"] == "stopped"


def test_each_swarm_session_holds_only_its_users_ticket_and_authenticates_as_its_user(
        master: Dict[str, Any]) -> None:
    m: SwarmMaster = master["m"]
    sessions = _start_sessions(master)
    _check_sessions(master, sessions)

    # past the ticket alice's session started with: the keeper renewed it in the cache the
    # running container mounts, and the session still authenticates as alice
    cache = tickets.cache_file(m.api.settings, master["users"]["alice"].id)
    first = kdc_tools.klist(cache, m.api.settings.krb5_conf)
    assert first is not None
    while utcnow() < first.expires_at + dt.timedelta(seconds=5):
        time.sleep(1)
    text = _execute(master, "alice", sessions["alice"],
                    "CURL = %r\n" % curl_command(master["web"].url) + KERBEROS_CLIENT)
    assert "web principal=alice@CDSW.TEST\nstatus=200" in text, (text, master["web"].log())
    renewed = kdc_tools.klist(cache, m.api.settings.krb5_conf)
    assert renewed is not None and renewed.expires_at > first.expires_at, (first, renewed)
    _stop_sessions(m, sessions)


def test_sessions_on_warm_engines_hold_only_their_users_ticket(master: Dict[str, Any]) -> None:
    """The same on engines claimed from the warm pool (sessions/warm_pool.py): while it waits a
    warm engine has no mount and no Kerberos variable at all; alice's and bob's sessions each
    claim one, which then holds that user's ticket cache alone, read-only, and authenticates as
    that user."""
    m: SwarmMaster = master["m"]
    warm = manager_for(m.api.client.app.state.server).warm
    warm.settings = warm.settings.with_overrides(session_warm_engines=2)
    try:
        waiting = {e.workload_id for e in ready_engines(m, 2)}
        for workload_id in waiting:
            container = service_spec(m, workload_id)["TaskTemplate"]["ContainerSpec"]
            assert not container.get("Mounts"), container
            assert not any(v.startswith("KRB5") for v in container.get("Env", [])), container
        sessions = _start_sessions(master)
        _check_sessions(master, sessions)
        claimed = {workload_of(m, sid) for sid in sessions.values()}
        assert claimed == waiting, (claimed, waiting)  # both claimed, not started cold
        _stop_sessions(m, sessions)
    finally:
        warm.settings = warm.settings.with_overrides(session_warm_engines=0)
        warm.tick()


def test_a_job_bob_runs_in_the_same_project_authenticates_as_bob(
        master: Dict[str, Any]) -> None:
    m: SwarmMaster = master["m"]
    bob = master["users"]["bob"]
    jobs = start_jobs(m.api, threaded=False, user=bob, project_id=m.project_id)
    jobs.script("whoami_krb.py", "OTHER = %r\nCURL = %r\n" % (
        _other_cache(master, "bob"), curl_command(master["web"].url)) + READ_CACHE
        + KERBEROS_CLIENT)
    job = jobs.create(name="whoami-krb", script="whoami_krb.py")
    run = jobs.run(job["id"])
    assert run["run_as"] == "bob"
    done = jobs.wait(job["id"], run["id"], tick=True, timeout=300)
    log = jobs.log(job["id"], run["id"])
    assert done["status"] == "succeeded", (done, log)
    assert ("principal=bob@CDSW.TEST listing=['krb5cc'] writable=no: Read-only file system"
            in log), log
    assert "other=False" in log, log
    assert "Default principal: bob@CDSW.TEST" in log, log
    assert "web principal=bob@CDSW.TEST\nstatus=200" in log, (log, master["web"].log())
    assert "alice" not in log, log
    assert done["node"] == "h1", done  # a container on the swarm node, not a local process
