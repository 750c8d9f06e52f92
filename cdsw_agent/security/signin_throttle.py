"""How fast passwords may be guessed: exponential backoff per account name, per client address
and per (account name, client address) pair.

| counter | key                    | free failures           | starts again                          |
|---------|------------------------|-------------------------|---------------------------------------|
| pair    | name and address       | login_max_failures      | on a success, an unlock, or after 24 h |
| address | client address         | 10 x login_max_failures | one hour after its first failure       |
| account | name                   | login_max_failures      | on a success, an unlock, or after 24 h |

Past its free failures a counter makes the client wait 30 s, doubling with every further failure
up to login_lockout_minutes. A waiting client is refused before any password is checked, with one
answer whatever the name ("too many failed sign-ins from here; wait N seconds").

Why the account counter binds only clients that failed on that account: anybody can type an
administrator's name. If an account's own counter refused everybody, a stranger could keep
`admin` locked out for ever with a few wrong passwords a quarter of an hour. So an account past
its free failures refuses only the addresses that have failed on it themselves (their pair counter
is not zero); a client that has not failed still has its password checked, and the right one signs
in. The price: during a guessing attack from many addresses, each fresh address gets one guess at
the account, and each failure doubles the wait for every address that failed. The pair counter
stops one address guessing one account; the address counter stops one address trying many names
(an IPv6 client counts by its /64, the block one subscriber usually holds).

Counters are kept for every name typed, account or not, so an unknown name and a real account get
the same answers at the same moments. Each attempt is counted (one atomic upsert per counter)
*before* its password is checked, so parallel guesses cannot slip through between a check and an
increment: of N simultaneous attempts, only those whose count is within the allowance are checked.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import Dict, Optional

from sqlalchemy import case, delete, select, update
from sqlalchemy.orm import Session

from ..settings import Settings
from ..store.models import SigninFailure

FIRST_WAIT_SECONDS = 30


@dataclass(frozen=True)
class Limit:
    free_factor: int        # free failures = free_factor x login_max_failures
    window: dt.timedelta    # a counter whose first failure is older than this starts again


LIMITS: Dict[str, Limit] = {
    "pair": Limit(1, dt.timedelta(hours=24)),
    "address": Limit(10, dt.timedelta(hours=1)),
    "account": Limit(1, dt.timedelta(hours=24)),
}
PRUNE_AFTER = max(limit.window for limit in LIMITS.values())


def wait_seconds(failures: int, free: int, cap_seconds: int) -> int:
    """How long a client waits after its `failures`-th failure."""
    if failures < free:
        return 0
    return min(FIRST_WAIT_SECONDS * 2 ** min(failures - free, 30), cap_seconds)


def client_key(host: Optional[str]) -> str:
    """The address a client is counted by: IPv4 as is, IPv6 by its /64."""
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network("%s/64" % ip, strict=False))
    return str(ip)


@dataclass
class Reservation:
    wait_until: Optional[dt.datetime]     # set when this attempt must not be checked
    account_until: Optional[dt.datetime]  # when the account's counter stops binding failed clients


class Throttle:
    def __init__(self, db: Session, settings: Settings, name: str, address: str):
        self.db = db
        self.free = {scope: limit.free_factor * settings.login_max_failures
                     for scope, limit in LIMITS.items()}
        self.cap = settings.login_lockout_minutes * 60
        self.keys = {"pair": "pair:%s|%s" % (name, address), "address": "address:" + address,
                     "account": "account:" + name}
        self.seen: Dict[str, int] = {}

    def _until(self, scope: str, failures: int, last: dt.datetime) -> Optional[dt.datetime]:
        wait = wait_seconds(failures, self.free[scope], self.cap)
        return last + dt.timedelta(seconds=wait) if wait else None

    def _binding(self) -> list:
        # the account counter binds only a client that failed on this account itself
        return ["pair", "address", "account"] if self.seen.get("pair") else ["pair", "address"]

    def check(self, now: dt.datetime) -> Optional[dt.datetime]:
        """Reads the counters; the time this client must wait until, or None. Writes nothing."""
        rows = {r.key: r for r in self.db.scalars(
            select(SigninFailure).where(SigninFailure.key.in_(list(self.keys.values()))))}
        untils = []
        for scope, key in self.keys.items():
            row = rows.get(key)
            fresh = row is not None and row.first_failure_at >= now - LIMITS[scope].window
            self.seen[scope] = row.failures if fresh else 0
            if fresh:
                until = self._until(scope, row.failures, row.last_failure_at)
                untils.append((scope, until))
        late = [u for scope, u in untils if u is not None and u > now and scope in self._binding()]
        return max(late) if late else None

    def reserve(self, now: dt.datetime) -> Reservation:
        """Counts this attempt as a failure before its password is checked (`succeeded` takes it
        back). Call after `check`. An attempt that lost a race with parallel ones must wait."""
        counts = {scope: self._bump(key, now, LIMITS[scope].window)
                  for scope, key in self.keys.items()}
        self.db.execute(delete(SigninFailure).where(SigninFailure.first_failure_at < now - PRUNE_AFTER))
        lost = [scope for scope in self._binding()
                if counts[scope] > max(self.free[scope], self.seen[scope] + 1)]
        wait_until = max(self._until(s, counts[s], now) or now for s in lost) if lost else None
        return Reservation(wait_until, self._until("account", counts["account"], now))

    def succeeded(self) -> None:
        """The password was right: forget this pair and the account's count; the address counts
        only failures."""
        self.db.execute(delete(SigninFailure).where(
            SigninFailure.key.in_([self.keys["pair"], self.keys["account"]])))
        self.db.execute(update(SigninFailure).where(SigninFailure.key == self.keys["address"])
                        .values(failures=SigninFailure.failures - 1))

    def _bump(self, key: str, now: dt.datetime, window: dt.timedelta) -> int:
        """One atomic statement: add a failure (restarting a stale counter), return the count."""
        table = SigninFailure.__table__
        if self.db.get_bind().dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stale = table.c.first_failure_at < now - window
        stmt = insert(table).values(key=key, failures=1, first_failure_at=now, last_failure_at=now)
        stmt = stmt.on_conflict_do_update(index_elements=[table.c.key], set_={
            "failures": case((stale, 1), else_=table.c.failures + 1),
            "first_failure_at": case((stale, now), else_=table.c.first_failure_at),
            "last_failure_at": now,
        }).returning(table.c.failures)
        return int(self.db.execute(stmt).scalar_one())


def forget_account(db: Session, name: str) -> None:
    """An administrator unlocked the account: its counter and its pairs start again."""
    escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    db.execute(delete(SigninFailure).where(
        (SigninFailure.key == "account:" + name)
        | SigninFailure.key.like("pair:%s|%%" % escaped, escape="\\")))
