"""Mail about a finished run: subject with the outcome, body with the facts and the log's end.

A mail that cannot be sent is logged (secrets redacted) and never changes the run's result.
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any, List, Optional, Sequence

from ..logs import RedactingFilter

log = logging.getLogger(__name__)
TAIL_LINES = 50
# run status -> (notify_on event, words in the subject)
OUTCOMES = {"succeeded": ("success", "succeeded"), "failed": ("failure", "failed"),
            "lost": ("failure", "failed"), "timed_out": ("timeout", "timed out"),
            "stopped": ("stop", "was stopped")}


def wanted(status: str, notify_on: Sequence[str], recipients: Sequence[str]) -> bool:
    outcome = OUTCOMES.get(status)
    return bool(recipients) and outcome is not None and outcome[0] in notify_on


def subject(job_name: str, status: str) -> str:
    return "[CDSW] job %s %s" % (job_name, OUTCOMES.get(status, ("", status))[1])


def body(job_name: str, project: str, run_id: int, status: str, exit_code: Optional[int],
         reason: str, started: Optional[dt.datetime], finished: Optional[dt.datetime],
         log_tail: List[str], url: str = "") -> str:
    duration = "%.1f s" % (finished - started).total_seconds() if started and finished else "-"
    lines = ["Job: %s (project %s)" % (job_name, project), "Run: %d" % run_id,
             "Status: %s" % status, "Exit code: %s" % ("-" if exit_code is None else exit_code),
             "Duration: %s" % duration]
    if reason:
        lines.append("Reason: %s" % reason)
    if url:
        lines.append("Details: %s" % url)
    lines += ["", "Last %d lines of the log:" % TAIL_LINES, ""] + log_tail
    return "\n".join(lines) + "\n"


def send(settings: Any, recipients: Sequence[str], subject_: str, text: str,
         timeout: float = 10.0) -> bool:
    """True when the SMTP server took the mail; False (logged) when mail is off or failed."""
    if not settings.smtp_host:
        log.info("mail is off (no smtp_host); not sending %r", subject_)
        return False
    try:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = settings.smtp_from, ", ".join(recipients), subject_
        msg.set_content(text)
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout) as smtp:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password)
            smtp.send_message(msg)
        return True
    except (OSError, smtplib.SMTPException, ValueError) as e:  # ValueError: a bad header
        redactor = RedactingFilter(settings.secret_values())
        log.warning("cannot send %r through %s:%d: %s", subject_, settings.smtp_host,
                    settings.smtp_port, redactor.redact(str(e) or type(e).__name__))
        return False
