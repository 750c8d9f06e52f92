"""Per-user Kerberos pieces without a KDC: klist parsing, kinit's errors as one line, when the
keeper renews or obtains, and what a swarm engine is given (only its user's cache, read-only)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from cdsw_agent.kerberos import engine as kerberos_engine
from cdsw_agent.kerberos import tickets
from cdsw_agent.kerberos.kdc import Ticket, explain, full_principal, KerberosError, parse_klist
from cdsw_agent.orchestrators import Mount, WorkloadSpec
from cdsw_agent.store.db import Database
from cdsw_agent.store.kerberos_models import KerberosCredential
from cdsw_agent.store.models import User

from ..conftest import make_settings

KLIST = """Ticket cache: FILE:/x/krb5cc
Default principal: alice@CDSW.TEST

Valid starting     Expires            Service principal
12/06/26 05:30:00  12/06/26 05:31:00  krbtgt/CDSW.TEST@CDSW.TEST
\trenew until 12/06/26 05:35:00
"""


def test_klist_output_is_read_in_utc() -> None:
    t = parse_klist(KLIST)
    assert t == Ticket("alice@CDSW.TEST", dt.datetime(2026, 12, 6, 5, 31),
                       dt.datetime(2026, 12, 6, 5, 35), dt.datetime(2026, 12, 6, 5, 30))
    plain = parse_klist(KLIST.replace("\trenew until 12/06/26 05:35:00\n", ""))
    assert plain is not None and plain.renew_until is None
    assert parse_klist("Ticket cache: FILE:/x\nDefault principal: a@B\n") is None


@pytest.mark.parametrize("output,status,line", [
    ("kinit: Password incorrect while getting initial credentials", 422,
     "the password for a@R is wrong (the KDC refused it)"),
    ("kinit: Client 'a@R' not found in Kerberos database while getting initial credentials",
     422, "principal a@R is unknown to the KDC: check the name and the realm"),
    ("kinit: Cannot contact any KDC for realm 'R' while getting initial credentials", 503,
     "cannot reach the KDC of R: it is down or krb5.conf names the wrong host; try again "
     "later or tell your administrator"),
    ("kinit: Keytab contains no suitable keys for a@R while getting initial credentials", 400,
     "the keytab holds no key for a@R: export a keytab for this principal (ktutil or kadmin "
     "ktadd)"),
])
def test_kinit_errors_are_one_line(output: str, status: int, line: str) -> None:
    e = explain(output + "\n", "a@R")
    assert (e.status, str(e)) == (status, line)


def test_a_keytab_with_an_old_key_is_not_called_a_wrong_password() -> None:
    e = explain("kinit: Password incorrect while getting initial credentials", "a@R", True)
    assert e.status == 400 and "keytab's key for a@R is not the current one" in str(e)


def test_principals_get_the_default_realm() -> None:
    assert full_principal(" alice ", "R.COM") == "alice@R.COM"
    assert full_principal("svc/host@OTHER", "R.COM") == "svc/host@OTHER"
    with pytest.raises(KerberosError):
        full_principal("alice", "")
    with pytest.raises(KerberosError):
        full_principal("a b;rm", "R")


def test_the_keeper_renews_with_a_third_left_and_obtains_when_renewal_cannot_help() -> None:
    start = dt.datetime(2026, 1, 1, 0, 0)
    t = Ticket("a@R", start + dt.timedelta(hours=9), start + dt.timedelta(days=7), start)
    assert tickets.action(t, "a@R", start + dt.timedelta(hours=5), 60) == ""
    assert tickets.action(t, "a@R", start + dt.timedelta(hours=6, minutes=1), 60) == "renew"
    assert tickets.action(t, "a@R", start + dt.timedelta(hours=9), 60) == "obtain"  # expired
    assert tickets.action(t, "b@R", start, 60) == "obtain"  # someone else's ticket
    assert tickets.action(None, "a@R", start, 60) == "obtain"
    short = Ticket("a@R", start + dt.timedelta(hours=9), start + dt.timedelta(hours=10), start)
    assert tickets.action(short, "a@R", start + dt.timedelta(hours=8), 60) == "obtain"


def _world(tmp_path: Path, **settings: object):
    s = make_settings(tmp_path / "data", kerberos_enabled=True,
                      krb5_conf=str(tmp_path / "krb5.conf"), **settings)
    (tmp_path / "krb5.conf").write_text("[libdefaults]\n default_realm = R\n")
    db = Database(s.database_url)
    db.upgrade()
    with db.session() as x:
        x.add_all([User(username="alice", password_hash="x"), User(username="bob",
                                                                   password_hash="x")])
    with db.session() as x:
        x.add(KerberosCredential(user_id=1, principal="alice@R", kind="password", secret=b"t"))
        x.add(KerberosCredential(user_id=2, principal="bob@R", kind="password", secret=b"t"))
    return s, db


def _spec() -> WorkloadSpec:
    return WorkloadSpec(name="job-1-run-1", image="engine:1", command=["python3", "x.py"],
                        env={}, mounts=[Mount("/data/projects/1", "/home/cdsw")])


def test_a_swarm_engine_mounts_only_its_users_cache_read_only(tmp_path: Path) -> None:
    s, db = _world(tmp_path)
    with db.session() as x:
        bob = x.get(User, 2)
        spec = _spec()
        kerberos_engine.attach(x, s, spec, bob, local=False)
    cache = Mount(str(tickets.cache_dir(s, 2)), kerberos_engine.CACHE_MOUNT, True)
    assert spec.mounts[1:] == [cache, Mount(s.krb5_conf, "/etc/krb5.conf", True)]
    assert spec.env == {"KRB5CCNAME": "FILE:/run/cdsw/krb5/krb5cc",
                        "KRB5_CONFIG": "/etc/krb5.conf"}
    alice_dir = str(tickets.cache_dir(s, 1))
    assert not any(alice_dir in m.source for m in spec.mounts)
    assert spec.command == ["python3", "x.py"]  # bob has a credential: no notice
    db.engine.dispose()


def test_without_a_credential_the_engine_prints_a_notice_first(tmp_path: Path) -> None:
    s, db = _world(tmp_path)
    with db.session() as x:
        x.add(User(username="dave", password_hash="x"))
    with db.session() as x:
        dave = x.get(User, 3)
        spec = _spec()
        kerberos_engine.attach(x, s, spec, dave, local=True)
    assert spec.env["KRB5CCNAME"] == "FILE:%s/krb5cc" % tickets.cache_dir(s, 3)
    assert spec.env["CDSW_KERBEROS_NOTICE"].startswith("Kerberos: dave has no Kerberos "
                                                       "credential")
    assert spec.command == kerberos_engine.NOTICE_WRAPPER + ["python3", "x.py"]
    # Kerberos off, or an engine acting for nobody: nothing added
    for settings, user in ((s.with_overrides(kerberos_enabled=False), dave), (s, None)):
        plain = _spec()
        with db.session() as x:
            kerberos_engine.attach(x, settings, plain, user, local=False)
        assert plain.env == {} and len(plain.mounts) == 1
    db.engine.dispose()
