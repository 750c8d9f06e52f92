"""Sign-in under attack: atomic counting, backoff per pair, address and account, no lock-out of
an administrator by a stranger, the same answers for unknown names, common passwords, and what a
password change revokes."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Dict, List, Tuple

from fastapi.testclient import TestClient
from sqlalchemy import select

from cdsw_agent.security.signin_throttle import client_key, wait_seconds
from cdsw_agent.store.models import ApiKey, SigninFailure, User

from ..conftest import PASSWORD, Api

SIGNIN = "/api/v1/auth/signin"


def from_address(api: Api, host: str) -> TestClient:
    return TestClient(api.client.app, client=(host, 40000))


def attempt(c: TestClient, name: str, password: str) -> Tuple[int, str]:
    r = c.post(SIGNIN, json={"username": name, "password": password})
    return r.status_code, r.json().get("error", "") if r.status_code != 200 else "ok"


def age_counters(api: Api, seconds: int) -> None:
    """Moves every failure `seconds` into the past, as if the client had waited."""
    with api.db.session() as s:
        for row in s.scalars(select(SigninFailure)):
            row.last_failure_at -= dt.timedelta(seconds=seconds)
            row.first_failure_at -= dt.timedelta(seconds=seconds)


def test_parallel_wrong_passwords_cannot_bypass_the_lockout(any_api: Api) -> None:
    """20 wrong passwords at once: each that gets past the first check is counted (one atomic
    statement per counter) before its password is checked, and only the allowance of them is
    checked at all; the rest are told to wait."""
    u = any_api.user()
    n = 20
    barrier = threading.Barrier(n)
    results: List[int] = []
    lock = threading.Lock()

    def guess(i: int) -> None:
        c = TestClient(any_api.client.app)
        barrier.wait()
        r = c.post(SIGNIN, json={"username": u.username, "password": "guess-%d" % i})
        with lock:
            results.append(r.status_code)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == n and set(results) <= {401, 429}
    assert results.count(401) <= any_api.settings.login_max_failures  # checked at most 5 times
    with any_api.db.session() as s:
        counted = s.get(User, u.id).failed_logins
        assert counted >= any_api.settings.login_max_failures
        # no lost update: every counter saw every counted attempt
        assert s.get(SigninFailure, "pair:%s|testclient" % u.username).failures == counted
        assert s.get(SigninFailure, "account:" + u.username).failures == counted
        assert s.get(SigninFailure, "address:testclient").failures == counted
    # and the right password does not get through now either
    assert any_api.client.post(SIGNIN, json={"username": u.username,
                                             "password": PASSWORD}).status_code == 429


def test_backoff_doubles_and_lets_the_owner_in_after_waiting(api: Api) -> None:
    u = api.user()
    c = from_address(api, "198.51.100.7")
    free = api.settings.login_max_failures
    for _ in range(free):
        assert attempt(c, u.username, "bad")[0] == 401
    waits = []
    for _ in range(3):
        r = c.post(SIGNIN, json={"username": u.username, "password": PASSWORD})
        assert r.status_code == 429
        waits.append(int(r.headers["Retry-After"]))
        age_counters(api, waits[-1])  # the client waits as told, then fails once more
        assert attempt(c, u.username, "bad")[0] == 401
    assert waits[0] <= 30 and waits[1] > 30 and waits[2] > waits[1]  # 30 s, 60 s, 120 s
    assert [wait_seconds(f, 5, 900) for f in (4, 5, 6, 7, 20)] == [0, 30, 60, 120, 900]
    r = c.post(SIGNIN, json={"username": u.username, "password": PASSWORD})
    age_counters(api, int(r.headers["Retry-After"]))
    assert attempt(c, u.username, PASSWORD) == (200, "ok")
    with api.db.session() as s:  # success forgets this pair and the account's count
        assert s.get(SigninFailure, "pair:%s|198.51.100.7" % u.username) is None
        assert s.get(User, u.id).failed_logins == 0


def test_a_stranger_cannot_lock_the_administrator_out(api: Api) -> None:
    admin = api.user("admin", admin=True)
    stranger = from_address(api, "203.0.113.66")
    for i in range(30):
        assert attempt(stranger, "admin", "guess-%d" % i)[0] in (401, 429)
    # the stranger is slowed down, even with the right password...
    assert attempt(stranger, "admin", PASSWORD)[0] == 429
    # ...the administrator, from an address that has not failed, signs in
    assert attempt(from_address(api, "192.0.2.10"), "admin", PASSWORD) == (200, "ok")
    # and the stranger is still slowed down
    assert attempt(stranger, "admin", PASSWORD)[0] == 429
    assert admin.id


def test_many_addresses_get_one_guess_each_while_the_account_is_past_its_allowance(api: Api) -> None:
    u = api.user()
    free = api.settings.login_max_failures
    bots = [from_address(api, "10.9.0.%d" % i) for i in range(1, free + 1)]
    for b in bots:
        assert attempt(b, u.username, "bad")[0] == 401
    # the account is past its allowance: addresses that failed on it wait...
    assert attempt(bots[0], u.username, PASSWORD)[0] == 429
    # ...a fresh one gets its one guess checked (a wrong one joins the waiting ones)
    fresh = from_address(api, "10.9.1.1")
    assert attempt(fresh, u.username, "bad")[0] == 401
    assert attempt(fresh, u.username, PASSWORD)[0] == 429
    # and the owner, from yet another address, signs in
    assert attempt(from_address(api, "10.9.1.2"), u.username, PASSWORD) == (200, "ok")


def test_one_address_cannot_spray_many_names(api: Api) -> None:
    u = api.user()
    sprayer = from_address(api, "198.51.100.99")
    allowance = 10 * api.settings.login_max_failures
    for i in range(allowance):
        assert attempt(sprayer, "name%d" % i, "bad")[0] == 401
    assert attempt(sprayer, u.username, PASSWORD)[0] == 429  # even a real user's right password
    assert attempt(from_address(api, "198.51.100.98"), u.username, PASSWORD) == (200, "ok")


def test_ipv6_clients_count_by_their_slash_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key(None) == "unknown"


def test_unknown_names_and_accounts_answer_alike(api: Api) -> None:
    u = api.user()
    checked: List[str] = []
    verify = api.client.app.state.server.passwords.verify

    def spy(stored_hash: str, password: str) -> bool:
        checked.append(stored_hash)
        return verify(stored_hash, password)

    api.client.app.state.server.passwords.verify = spy  # type: ignore[method-assign]
    answers: Dict[str, list] = {}
    for name, host in ((u.username, "192.0.2.50"), ("no-such-user", "192.0.2.51")):
        c = from_address(api, host)
        answers[name] = [attempt(c, name, "bad-%d" % i) for i in range(7)]
        # the account rule too: other addresses fail once each, then the first comes back
        for i in range(api.settings.login_max_failures):
            answers[name].append(attempt(from_address(api, host + "%d" % i), name, "bad"))
        answers[name].append(attempt(from_address(api, host + "0"), name, "bad"))
    assert answers[u.username] == answers["no-such-user"]
    first = answers[u.username]
    assert first[0] == (401, "invalid username or password")
    assert first[6][0] == 429 and "too many failed sign-ins" in first[6][1]
    assert first[-1][0] == 429
    # a password hash was checked as often for the unknown name as for the account
    assert len(checked) % 2 == 0 and checked.count(None) == len(checked) // 2


def test_common_passwords_are_refused(api: Api) -> None:
    u = api.user()
    c = api.client_for(u)
    for common in ("password123", "Qwertyuiop", "1q2w3e4r5t"):
        r = c.put("/api/v1/account/password", json={"current_password": PASSWORD, "new_password": common})
        assert r.status_code == 422 and "common passwords" in r.json()["error"], common
    admin = api.client_for(api.user(admin=True))
    r = admin.post("/api/v1/users", json={"username": "dave", "password": "manchester"})
    assert r.status_code == 422 and "common passwords" in r.json()["error"]


def test_password_change_signs_out_other_browsers_and_revokes_keys_when_asked(any_api: Api) -> None:
    u = any_api.user()
    here, elsewhere = any_api.client_for(u), any_api.client_for(u)
    keyed = any_api.key_client(u)
    r = here.put("/api/v1/account/password", json={"current_password": PASSWORD,
                                                   "new_password": "a-new-long-secret-1"})
    assert r.status_code == 204
    assert here.get("/api/v1/account").status_code == 200
    assert elsewhere.get("/api/v1/account").status_code == 401
    assert keyed.get("/api/v1/account").status_code == 200  # keys kept unless asked
    r = here.put("/api/v1/account/password", json={"current_password": "a-new-long-secret-1",
                                                   "new_password": "a-new-long-secret-2",
                                                   "revoke_api_keys": True})
    assert r.status_code == 204
    assert keyed.get("/api/v1/account").status_code == 401
    with any_api.db.session() as s:
        assert all(k.revoked_at is not None
                   for k in s.scalars(select(ApiKey).where(ApiKey.user_id == u.id)))
    assert here.get("/api/v1/account").status_code == 200
