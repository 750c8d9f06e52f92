"""Per-user Kerberos against a real MIT KDC and real Kerberos-only services (PostgreSQL with
`gss` authentication, Apache httpd with mod_auth_gssapi), on the local orchestrator (issue 12).

- A credential is checked against the KDC when it is saved; every refusal (wrong password,
  keytab of another principal, unknown principal, KDC down) is one line and stores nothing.
- alice's session logs in to PostgreSQL and to the web service (curl --negotiate) as alice@REALM,
  bob's job in the same project as bob@REALM, and bob's engine is given bob's ticket cache only.
- Tickets last 30 s here: a session keeps working past that, the master renewing its ticket.
- Someone without a credential reads one clear line in the job log and the session console.
- With Kerberos on, interactive sharing is refused.
"""

from __future__ import annotations

import datetime as dt
import json
import stat
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from sqlalchemy import select

from cdsw_agent.kerberos import credentials, kdc as kdc_tools, tickets
from cdsw_agent.server import scheduler
from cdsw_agent.sessions.monitor import manager_for
from cdsw_agent.store.kerberos_models import KerberosCredential
from cdsw_agent.store.models import AuditEvent, utcnow

from ..conftest import Api, build_api, make_settings
from .kdc import (GssHttpd, GssPostgres, Kdc, curl_command, psql_command, start_gss_httpd,
                  start_gss_postgres, start_kdc)
from .test_jobs_api import start_jobs

LIFETIME_SECONDS = 30
PASSWORDS = {"alice": "alice-Krb-pw1", "bob": "bob-Krb-pw2"}


@pytest.fixture(scope="module")
def realm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    root = tmp_path_factory.mktemp("kerberos")
    kdc = start_kdc(root / "kdc")
    service = web = None
    try:
        for name, password in PASSWORDS.items():
            kdc.add_principal(name, password)
        kdc.add_principal("carol")  # random key: only her keytab logs in
        carol_keytab = kdc.keytab("carol", root / "carol.keytab")
        service = start_gss_postgres(kdc)
        for role in ("alice", "bob", "carol", "dave"):
            service.add_role(role)
        web = start_gss_httpd(kdc)
        yield {"kdc": kdc, "pg": service, "web": web, "carol_keytab": carol_keytab,
               "down_conf": kdc.down_conf(root / "krb5-down.conf"), "root": root}
    finally:
        if web is not None:
            web.stop()
        if service is not None:
            service.stop()
        kdc.stop()


def _settings(data: Path, kdc: Kdc, **extra: Any) -> Any:
    values = dict(kerberos_enabled=True, krb5_conf=str(kdc.krb5_conf),
                  kerberos_ticket_lifetime="%ds" % LIFETIME_SECONDS,
                  kerberos_renew_lifetime="10m", kerberos_check_seconds=2,
                  session_idle_minutes=30, session_max_minutes=120)
    values.update(extra)
    return make_settings(data, **values)


def _put(client: Any, **form: Any) -> Any:
    files = {"keytab": ("keytab", form.pop("keytab"), "application/octet-stream")} \
        if "keytab" in form else None
    return client.put("/api/v1/account/kerberos", data=form, files=files)


def _stored(api: Api) -> List[str]:
    with api.db.session() as s:
        return [c.principal for c in s.scalars(select(KerberosCredential))]


def _audit(api: Api, prefix: str) -> List[Any]:
    with api.db.session() as s:
        return [(e.action, e.actor, e.detail) for e in s.scalars(
            select(AuditEvent).where(AuditEvent.action.like(prefix + "%")).order_by(AuditEvent.id))]


def test_a_credential_is_checked_against_the_kdc_and_refusals_store_nothing(
        realm: Dict[str, Any], tmp_path: Path) -> None:
    kdc: Kdc = realm["kdc"]
    api = build_api(_settings(tmp_path / "data", kdc))
    try:
        alice = api.user("alice")
        c = api.client_for(alice)
        status = c.get("/api/v1/account/kerberos").json()
        assert status["realm"] == kdc.realm and status["state"] == "none", status
        refusals = [
            (dict(principal="alice", password="wrong-password"), 422,
             "the password for alice@CDSW.TEST is wrong (the KDC refused it)"),
            (dict(principal="nobody", password="x-password"), 422,
             "principal nobody@CDSW.TEST is unknown to the KDC: check the name and the realm"),
            (dict(principal="alice", keytab=realm["carol_keytab"].read_bytes()), 400,
             "the keytab holds no key for alice@CDSW.TEST: export a keytab for this principal "
             "(ktutil or kadmin ktadd)"),
            (dict(principal="alice", keytab=b"not a keytab"), 400,
             "the uploaded file is not a keytab: export one with ktutil or kadmin ktadd"),
        ]
        for form, code, line in refusals:
            r = _put(c, **form)
            assert r.status_code == code and r.json()["error"] == line, (form, r.text)
            assert "\n" not in r.json()["error"]
            assert _stored(api) == [] and not tickets.cache_file(api.settings, alice.id).exists()
        # the KDC does not answer: 503, one line
        down = build_api(_settings(tmp_path / "down", kdc, krb5_conf=str(realm["down_conf"])))
        try:
            r = _put(down.client_for(down.user("alice")), principal="alice",
                     password=PASSWORDS["alice"])
            assert r.status_code == 503, r.text
            assert r.json()["error"] == ("cannot reach the KDC of CDSW.TEST: it is down or "
                                         "krb5.conf names the wrong host; try again later or "
                                         "tell your administrator")
            assert _stored(down) == []
        finally:
            down.db.engine.dispose()
        refused = _audit(api, "kerberos.credential.refused")
        assert len(refused) == len(refusals) and all(a == "alice" for _, a, _ in refused)
        assert all("wrong-password" not in json.dumps(d) for _, _, d in refused)

        # the right password: checked, stored encrypted, never shown again
        r = _put(c, principal="alice", password=PASSWORDS["alice"])
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["principal"], body["kind"], body["state"]) == \
            ("alice@CDSW.TEST", "password", "valid")
        assert PASSWORDS["alice"] not in r.text and PASSWORDS["alice"] not in \
            c.get("/api/v1/account/kerberos").text
        with api.db.session() as s:
            secret = s.get(KerberosCredential, alice.id).secret
        assert PASSWORDS["alice"].encode() not in secret
        assert credentials.decrypt(api.settings, secret) == PASSWORDS["alice"].encode()
        key = credentials.key_path(api.settings)
        assert key.parent == Path(api.settings.data_dir) / "kerberos"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        ticket = kdc_tools.klist(tickets.cache_file(api.settings, alice.id), str(kdc.krb5_conf))
        assert ticket is not None and ticket.principal == "alice@CDSW.TEST"
        assert _audit(api, "kerberos.credential.set")[-1][2] == {"principal": "alice@CDSW.TEST",
                                                                 "kind": "password"}
        # a keytab works the same (carol's, for carol)
        carol = api.user("carol")
        r = _put(api.client_for(carol), principal="carol@CDSW.TEST",
                 keytab=realm["carol_keytab"].read_bytes())
        assert r.status_code == 200 and r.json()["kind"] == "keytab", r.text
        # the page shows the realm and the state, not the secret
        page = c.get("/account/hadoop-authentication")
        assert page.status_code == 200 and "alice@CDSW.TEST" in page.text
        assert "CDSW.TEST" in page.text and PASSWORDS["alice"] not in page.text
        # removed: no credential, no ticket
        assert c.delete("/api/v1/account/kerberos").status_code == 204
        assert c.get("/api/v1/account/kerberos").json()["state"] == "none"
        assert not tickets.cache_file(api.settings, alice.id).exists()
        assert _stored(api) == ["carol@CDSW.TEST"]
    finally:
        api.db.engine.dispose()


class World:
    def __init__(self, api: Api, service: GssPostgres, web: GssHttpd):
        self.api, self.service, self.web = api, service, web
        self.alice, self.bob, self.dave = api.user("alice"), api.user("bob"), api.user("dave")
        self.c = {u.username: api.key_client(u) for u in (self.alice, self.bob, self.dave)}
        r = self.c["alice"].post("/api/v1/projects", json={"name": "secure"})
        assert r.status_code == 201, r.text
        self.pid = r.json()["id"]
        for user in (self.bob, self.dave):
            r = self.c["alice"].put("/api/v1/projects/%d/collaborators/%d" % (self.pid, user.id),
                                    json={"role": "contributor"})
            assert r.status_code == 200, r.text

    def session(self, who: str) -> int:
        r = self.c[who].post("/api/v1/projects/%d/sessions" % self.pid, json={})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            s = self.c[who].get("/api/v1/sessions/%d" % sid).json()
            if s["status"] in ("running", "failed"):
                assert s["status"] == "running", s
                return sid
            time.sleep(0.3)
        raise AssertionError("session %d did not start" % sid)

    def run(self, who: str, sid: int, code: str) -> str:
        with self.c[who].stream("POST", "/api/v1/sessions/%d/execute" % sid,
                                json={"code": code}) as r:
            assert r.status_code == 200, r.read()
            events = [json.loads(line) for line in r.iter_lines() if line]
        return "".join(e.get("text", "") for e in events if e.get("type") == "stream")

    def whoami_code(self, user: str) -> str:
        return ("import subprocess\nr = subprocess.run(%r, capture_output=True, text=True)\n"
                "print('principal=' + r.stdout.strip(), r.stderr.strip()[:200])\n"
                % psql_command(self.service.port, user))

    def curl_code(self) -> str:
        """The engine reaches the web service with its ticket (SPNEGO)."""
        return ("import subprocess\nr = subprocess.run(%r, capture_output=True, text=True)\n"
                "print('web ' + r.stdout.strip(), r.stderr.strip()[:200])\n"
                % curl_command(self.web.url))


@pytest.fixture(scope="module")
def world(realm: Dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    api = build_api(_settings(tmp_path_factory.mktemp("krbworld") / "data", realm["kdc"]))
    w = World(api, realm["pg"], realm["web"])
    for user in (w.alice, w.bob):
        r = _put(api.client_for(user), principal=user.username,
                 password=PASSWORDS[user.username])
        assert r.status_code == 200, r.text
    tickets.start(api.client.app.state.server)  # the master's keeper, every 2 s
    yield w
    tickets.stop(api.client.app.state.server)
    scheduler.stop(api.client.app.state.server)
    orch = manager_for(api.client.app.state.server).orchestrator
    for ref in orch.list():
        orch.remove(ref.id)
    api.db.engine.dispose()


def test_each_engine_authenticates_as_its_own_user_and_outlives_its_first_ticket(
        world: World) -> None:
    w = world
    sid = w.session("alice")
    started = utcnow()
    out = w.run("alice", sid, w.whoami_code("alice"))
    assert "principal=alice@CDSW.TEST" in out, out
    out = w.run("alice", sid, w.curl_code())
    assert "web principal=alice@CDSW.TEST\nstatus=200" in out, out
    # the session's cache is alice's own, and holds alice's ticket only
    env = w.run("alice", sid, "import os\nprint(os.environ['KRB5CCNAME'])\n").strip()
    assert env == "FILE:%s" % tickets.cache_file(w.api.settings, w.alice.id), env

    # bob, a Contributor of alice's project, runs a job: it logs in as bob, with bob's cache
    jobs = start_jobs(w.api, threaded=False, user=w.bob, project_id=w.pid)
    jobs.script("whoami.py", "import os, subprocess\n"
                "print('cache=' + os.environ['KRB5CCNAME'])\n"
                "print(subprocess.run(['klist'], capture_output=True, text=True).stdout)\n"
                + w.whoami_code("bob") + w.curl_code())
    job = jobs.create(name="whoami", script="whoami.py")
    run = jobs.run(job["id"])
    assert run["run_as"] == "bob"
    done = jobs.wait(job["id"], run["id"], tick=True, timeout=60)
    log = jobs.log(job["id"], run["id"])
    assert done["status"] == "succeeded", (done, log)
    assert "principal=bob@CDSW.TEST" in log, log
    assert "web principal=bob@CDSW.TEST\nstatus=200" in log, log
    assert "cache=FILE:%s\n" % tickets.cache_file(w.api.settings, w.bob.id) in log, log
    assert "Default principal: bob@CDSW.TEST" in log and "alice" not in log, log

    # past the first ticket's lifetime: the keeper renewed it, the session still logs in
    first = kdc_tools.klist(tickets.cache_file(w.api.settings, w.alice.id),
                            w.api.settings.krb5_conf)
    assert first is not None
    while utcnow() < started + dt.timedelta(seconds=LIFETIME_SECONDS + 8):
        time.sleep(1)
    out = w.run("alice", sid, w.whoami_code("alice"))
    assert "principal=alice@CDSW.TEST" in out, out
    renewed = [d for a, _, d in _audit(w.api, "kerberos.ticket.renewed")
               if d["principal"] == "alice@CDSW.TEST"]
    assert renewed, _audit(w.api, "kerberos.ticket")
    now_ticket = kdc_tools.klist(tickets.cache_file(w.api.settings, w.alice.id),
                                 w.api.settings.krb5_conf)
    assert now_ticket is not None and now_ticket.expires_at > started + \
        dt.timedelta(seconds=LIFETIME_SECONDS)
    status = w.c["alice"].get("/api/v1/account/kerberos").json()
    assert status["state"] == "valid" and status["last_renewed_at"] > started.isoformat()

    # with Kerberos on, lending the session (and so alice's ticket) is refused
    r = w.c["alice"].put("/api/v1/sessions/%d/shares/%d" % (sid, w.bob.id),
                         json={"mode": "interactive"})
    assert r.status_code == 403 and "session_sharing_allowed" in r.json()["error"], r.text
    scheduler.stop(w.api.client.app.state.server)


def test_someone_without_a_credential_reads_one_clear_line(world: World) -> None:
    w = world
    notice = ("Kerberos: dave has no Kerberos credential, so this engine has no ticket and "
              "Hadoop refuses it; add your principal with a password or keytab under Account > "
              "Hadoop Authentication, then start it again")
    jobs = start_jobs(w.api, threaded=False, user=w.dave, project_id=w.pid)
    jobs.script("plain.py", "print('ran')\n")
    job = jobs.create(name="plain", script="plain.py")
    run = jobs.run(job["id"])
    assert jobs.wait(job["id"], run["id"], tick=True, timeout=60)["status"] == "succeeded"
    assert jobs.log(job["id"], run["id"]) == notice + "\nran\n"
    sid = w.session("dave")
    log = w.c["dave"].get("/api/v1/sessions/%d/log" % sid).text
    assert notice in log, log
    scheduler.stop(w.api.client.app.state.server)


def test_the_keeper_renews_reobtains_and_reports_failures(realm: Dict[str, Any],
                                                          tmp_path: Path) -> None:
    """One round at a time, at chosen instants: renew before expiry, obtain again past the
    renewable lifetime, and a KDC refusal shown on the API, in health and the audit log."""
    from cdsw_agent.health import REGISTRY, Status

    kdc: Kdc = realm["kdc"]
    kdc.add_principal("erin", "erin-Krb-pw1")
    api = build_api(_settings(tmp_path / "data", kdc, kerberos_renew_lifetime="40s"))
    try:
        erin = api.user("erin")
        c = api.client_for(erin)
        assert _put(c, principal="erin", password="erin-Krb-pw1").status_code == 200

        def keep(after: float) -> List[str]:
            return tickets.keep(api.db.session, api.settings, 2.0,
                                now=utcnow() + dt.timedelta(seconds=after))

        cache = tickets.cache_file(api.settings, erin.id)
        first = kdc_tools.klist(cache, str(kdc.krb5_conf))
        assert first is not None and first.renew_until is not None
        assert keep(0) == []  # fresh: nothing to do
        assert keep(LIFETIME_SECONDS - 8) == ["erin@CDSW.TEST: renew"]  # a third left
        # close to the renewable lifetime a renewal would be too short: obtained again, the
        # cache replaced by a new file (engines never see a half-written one)
        inode = cache.stat().st_ino
        assert keep(36) == ["erin@CDSW.TEST: obtain"]
        second = kdc_tools.klist(cache, str(kdc.krb5_conf))
        assert second is not None and second.principal == "erin@CDSW.TEST"
        assert cache.stat().st_ino != inode and stat.S_IMODE(cache.stat().st_mode) == 0o600
        assert [p.name for p in cache.parent.iterdir()] == ["krb5cc"]  # no temporary left
        actions = [a for a, _, _ in _audit(api, "kerberos.ticket.")]
        assert actions == ["kerberos.ticket.renewed", "kerberos.ticket.obtained"]
        health = REGISTRY.run(api.settings, names=["kerberos"])[0]
        assert health.status == Status.OK, health.message
        assert health.message.endswith("default realm CDSW.TEST; 1 user ticket(s) valid")

        # the password changed at the KDC: the stored one no longer works
        kdc.kadmin("cpw -pw erin-Krb-pw2 erin")
        line = "the password for erin@CDSW.TEST is wrong (the KDC refused it)"
        assert keep(LIFETIME_SECONDS + 60) == ["erin@CDSW.TEST: failed"]
        assert keep(LIFETIME_SECONDS + 62) == ["erin@CDSW.TEST: failed"]
        failed = _audit(api, "kerberos.ticket.failed")
        assert [d for _, _, d in failed] == [{"principal": "erin@CDSW.TEST", "error": line}]
        status = c.get("/api/v1/account/kerberos").json()
        assert status["state"] == "failing" and status["last_error"] == line
        page = c.get("/account/hadoop-authentication").text
        assert line in page
        health = REGISTRY.run(api.settings, names=["kerberos"])[0]
        assert health.status == Status.WARNING
        assert "1 failing: erin (erin@CDSW.TEST): " + line in health.message
        # the user gives the new password: valid again, error gone
        assert _put(c, principal="erin", password="erin-Krb-pw2").status_code == 200
        assert c.get("/api/v1/account/kerberos").json()["last_error"] == ""
    finally:
        api.db.engine.dispose()


def test_the_workbench_keeps_its_own_service_ticket_from_the_managers_keytab(
        realm: Dict[str, Any], tmp_path: Path) -> None:
    """kerberos_service_principal/keytab (what Cloudera Manager's kerberosPrincipals and
    Ambari's kerberos.json create): the master obtains and renews its own ticket from it."""
    from cdsw_agent.health import REGISTRY, Status

    kdc: Kdc = realm["kdc"]
    kdc.add_principal("cdsw/localhost")
    keytab = kdc.keytab("cdsw/localhost", tmp_path / "cdsw.service.keytab")
    settings = _settings(tmp_path / "data", kdc,
                         kerberos_service_principal="cdsw/localhost@CDSW.TEST",
                         kerberos_service_keytab=str(keytab))
    api = build_api(settings)
    try:
        health = REGISTRY.run(settings, names=["kerberos"])[0]
        assert health.status == Status.WARNING and (
            "the service principal cdsw/localhost@CDSW.TEST has no valid ticket" in
            health.message), health.message
        assert tickets.keep_service(settings, 2.0) == "cdsw/localhost@CDSW.TEST: obtain"
        assert tickets.keep_service(settings, 2.0) == ""  # fresh
        later = utcnow() + dt.timedelta(seconds=LIFETIME_SECONDS - 8)
        assert tickets.keep_service(settings, 2.0, later) == "cdsw/localhost@CDSW.TEST: renew"
        ticket = kdc_tools.klist(tickets.service_cache(settings), str(kdc.krb5_conf))
        assert ticket is not None and ticket.principal == "cdsw/localhost@CDSW.TEST"
        assert stat.S_IMODE(tickets.service_cache(settings).stat().st_mode) == 0o600
        health = REGISTRY.run(settings, names=["kerberos"])[0]
        assert health.status == Status.OK and \
            "service principal cdsw/localhost@CDSW.TEST valid until" in health.message
        # a keytab the KDC no longer accepts (the key was changed): one line, not a traceback
        kdc.kadmin("cpw -randkey cdsw/localhost")
        tickets.service_cache(settings).unlink()
        done = tickets.keep_service(settings, 2.0)
        assert done == ("cdsw/localhost@CDSW.TEST: failed: the keytab's key for "
                        "cdsw/localhost@CDSW.TEST is not the current one (the KDC refused it): "
                        "export a new keytab"), done
    finally:
        api.db.engine.dispose()
