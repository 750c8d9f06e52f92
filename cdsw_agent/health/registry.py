"""Named health checks: what each one applies to, how it is run, what it returns.

A check is a function ``(HealthContext) -> Outcome``. The registry names it,
runs it in a daemon thread under a deadline and turns any exception into
UNKNOWN, so a broken or hanging check can never break `cdsw health`, /metrics
or a manager's alert.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Sequence

from ..roles import ROLE_NAMES
from ..settings import Settings

DEFAULT_TIMEOUT = 5.0  # seconds a whole check may take; network calls inside use ~3 s
NETWORK_TIMEOUT = 3.0


class Status(enum.IntEnum):
    """Values are the Nagios / Ambari SCRIPT alert exit codes."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


# Which status wins when several are combined (as Nagios check_multi does): a known problem
# outranks "could not tell", and CRITICAL outranks everything.
SEVERITY = {Status.OK: 0, Status.UNKNOWN: 1, Status.WARNING: 2, Status.CRITICAL: 3}


def worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, key=SEVERITY.__getitem__, default=Status.OK)


@dataclass(frozen=True)
class Outcome:
    """What a check function returns; the registry adds the name."""

    status: Status
    message: str
    data: Dict[str, Any] = field(default_factory=dict)


def ok(message: str, **data: Any) -> Outcome:
    return Outcome(Status.OK, message, data)


def warning(message: str, **data: Any) -> Outcome:
    return Outcome(Status.WARNING, message, data)


def critical(message: str, **data: Any) -> Outcome:
    return Outcome(Status.CRITICAL, message, data)


def unknown(message: str, **data: Any) -> Outcome:
    return Outcome(Status.UNKNOWN, message, data)


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    message: str
    data: Dict[str, Any] = field(default_factory=dict)
    duration: float = 0.0

    def as_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "status": self.status.name, "code": int(self.status),
                "message": self.message, "data": self.data,
                "duration_ms": int(self.duration * 1000)}


class HealthContext:
    """What checks share during one run: the settings and lazily made, cached clients."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._guard = threading.Lock()
        self._locks: Dict[str, threading.Lock] = {}
        self._cache: Dict[str, Any] = {}

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        """The value of make(), computed once per run (its exception is re-raised each time).

        One lock per key: a slow Docker connection does not hold up the master's answer."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._cache:
                try:
                    self._cache[key] = (True, make())
                except Exception as e:  # remembered so sibling checks fail the same way
                    self._cache[key] = (False, e)
            good, value = self._cache[key]
        if not good:
            raise value
        return value


CheckFunc = Callable[[HealthContext], Outcome]


@dataclass(frozen=True)
class Check:
    name: str
    description: str
    roles: FrozenSet[str]
    func: CheckFunc
    timeout: float = DEFAULT_TIMEOUT


class UnknownCheck(KeyError):
    def __init__(self, names: Sequence[str], known: Sequence[str]):
        super().__init__(names)
        self.names, self.known = list(names), list(known)

    def __str__(self) -> str:
        return "unknown check %s; known checks: %s" % (", ".join(self.names), ", ".join(self.known))


class Registry:
    def __init__(self) -> None:
        self._checks: Dict[str, Check] = {}

    def register(self, name: str, description: str, roles: Iterable[str] = ROLE_NAMES,
                 timeout: float = DEFAULT_TIMEOUT) -> Callable[[CheckFunc], CheckFunc]:
        role_set = frozenset(roles)
        bad = role_set - set(ROLE_NAMES)
        if bad or not role_set:
            raise ValueError("check %s: roles must be some of %s" % (name, ", ".join(ROLE_NAMES)))

        def decorate(func: CheckFunc) -> CheckFunc:
            if name in self._checks:
                raise ValueError("check %s is registered twice" % name)
            self._checks[name] = Check(name, description, role_set, func, timeout)
            return func

        return decorate

    def names(self) -> List[str]:
        return list(self._checks)

    def get(self, name: str) -> Check:
        if name not in self._checks:
            raise UnknownCheck([name], self.names())
        return self._checks[name]

    def select(self, names: Optional[Sequence[str]] = None,
               role: Optional[str] = None) -> List[Check]:
        """Checks by name (in registry order), or those that apply to a role, or all."""
        if names:
            missing = [n for n in names if n not in self._checks]
            if missing:
                raise UnknownCheck(missing, self.names())
        if role is not None and role not in ROLE_NAMES:
            raise ValueError("unknown role %s; expected one of %s" % (role, ", ".join(ROLE_NAMES)))
        return [c for c in self._checks.values()
                if (not names or c.name in names) and (role is None or role in c.roles)]

    def run(self, settings: Settings, names: Optional[Sequence[str]] = None,
            role: Optional[str] = None) -> List[CheckResult]:
        """Run the selected checks concurrently; results come back in registry order."""
        context = HealthContext(settings)
        checks = self.select(names, role)
        slots: List[Optional[CheckResult]] = [None] * len(checks)
        threads = []
        for i, check in enumerate(checks):
            t = threading.Thread(target=_run_into, args=(check, context, slots, i),
                                 name="health-" + check.name, daemon=True)
            t.start()
            threads.append(t)
        start = time.monotonic()
        for i, (check, t) in enumerate(zip(checks, threads)):
            t.join(max(0.0, check.timeout - (time.monotonic() - start)))
            if slots[i] is None:  # still running: leave the daemon thread behind
                slots[i] = CheckResult(check.name, Status.UNKNOWN,
                                       "did not finish within %g s" % check.timeout,
                                       duration=time.monotonic() - start)
        return [r for r in slots if r is not None]


def run_one(check: Check, context: HealthContext) -> CheckResult:
    """Run a check in this thread; never raises."""
    start = time.monotonic()
    try:
        out = check.func(context)
        if not isinstance(out, Outcome):
            raise TypeError("check returned %r instead of an Outcome" % type(out).__name__)
    except Exception as e:
        out = unknown("check failed: %s: %s" % (type(e).__name__, _first_line(e)))
    return CheckResult(check.name, out.status, out.message, dict(out.data),
                       time.monotonic() - start)


def _run_into(check: Check, context: HealthContext, slots: List[Optional[CheckResult]],
              index: int) -> None:
    result = run_one(check, context)
    if slots[index] is None:  # not already reported as timed out
        slots[index] = result


def _first_line(e: object) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


# what low-level network errors mean, in the words an admin can act on
_REASONS = (
    (("FileNotFoundError", "No such file or directory"), "no such socket"),
    (("ConnectionRefusedError", "Connection refused"), "connection refused"),
    (("PermissionError", "Permission denied"), "permission denied"),
    (("timed out", "Timeout", "TimeoutError"), "timed out"),
    (("NameResolutionError", "Name or service not known", "getaddrinfo failed"),
     "host name does not resolve"),
    (("SSLError", "CERTIFICATE_VERIFY_FAILED", "WRONG_VERSION_NUMBER"), "TLS handshake failed"),
)


def reason(e: BaseException) -> str:
    """A short cause for a connection error, instead of urllib3's nested repr."""
    text = "%s %s" % (type(e).__name__, e)
    for needles, meaning in _REASONS:
        if any(n in text for n in needles):
            return meaning
    return _first_line(e)[:200]


# The workbench's checks; the modules that define them are imported by cdsw_agent.health.
REGISTRY = Registry()
