"""Cron schedules with a time zone. Times given and returned are naive UTC, like the database."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

UTC = dt.timezone.utc
SHORTCUTS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
CRON_HELP = ("give five fields 'minute hour day-of-month month day-of-week' "
             "(for example '0 6 * * 1-5') or one of " + ", ".join(SHORTCUTS))


class ScheduleError(ValueError):
    """A schedule that cannot be used; `field` names the request field to fix."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def parse_timezone(name: str) -> ZoneInfo:
    try:
        if not name or name.startswith(("/", ".")) or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError("timezone", "unknown time zone %r; use an IANA name such as UTC or "
                                        "Europe/Berlin" % name)


def validate_cron(expr: str) -> str:
    """The cron line, normalised; ScheduleError naming `schedule` when it does not parse."""
    line = " ".join(expr.split())
    fields = line.split(" ")
    ok = line in SHORTCUTS or (len(fields) == 5 and croniter.is_valid(line))
    if not ok:
        raise ScheduleError("schedule", "%r is not a cron line; %s" % (expr, CRON_HELP))
    return line


def _aware(when: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    return when.replace(tzinfo=UTC).astimezone(tz)


def _naive(when: dt.datetime) -> dt.datetime:
    return when.astimezone(UTC).replace(tzinfo=None)


def previous_fire(expr: str, tz: str, now: dt.datetime) -> dt.datetime:
    """The latest fire time at or before now."""
    start = _aware(now + dt.timedelta(microseconds=1), parse_timezone(tz))
    return _naive(croniter(expr, start).get_prev(dt.datetime))


def next_fire(expr: str, tz: str, after: dt.datetime) -> dt.datetime:
    """The first fire time strictly after `after`."""
    return _naive(croniter(expr, _aware(after, parse_timezone(tz))).get_next(dt.datetime))


@dataclass(frozen=True)
class Due:
    at: dt.datetime  # the fire time this run stands for
    trigger: str  # "schedule", or "catch-up" when earlier fire times were missed


LATE = dt.timedelta(minutes=1)


def due(expr: str, tz: str, last_scheduled: Optional[dt.datetime], now: dt.datetime,
        late: dt.timedelta = LATE) -> Optional[Due]:
    """What a tick at `now` must start: nothing, the run due now, or one catch-up run that
    stands for every fire time missed while the master was down (never one per missed time).
    A run is a catch-up when earlier fire times were missed or it starts later than `late`."""
    if last_scheduled is None:
        return None  # a new schedule starts counting from now
    latest = previous_fire(expr, tz, now)
    if latest <= last_scheduled:
        return None
    missed_more = next_fire(expr, tz, last_scheduled) < latest
    return Due(latest, "catch-up" if missed_more or now - latest > late else "schedule")
