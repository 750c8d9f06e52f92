"""Job notifications delivered to a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import email
import email.policy
import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, List

import pytest

aiosmtpd = pytest.importorskip("aiosmtpd", reason="aiosmtpd is needed for the mail tests")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult  # noqa: E402

from cdsw_agent.server import scheduler  # noqa: E402

from ..conftest import build_api, make_settings  # noqa: E402
from .test_jobs_api import Jobs, start_jobs  # noqa: E402

SMTP_USER, SMTP_PASSWORD = "cdsw-mailer", "mail-pass-7731"
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@dataclass
class Inbox:
    messages: List[email.message.EmailMessage] = field(default_factory=list)
    logins: List[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content,
                                                      policy=email.policy.default))
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        ok = auth_data.login == SMTP_USER.encode() and auth_data.password == SMTP_PASSWORD.encode()
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok)

    def wait(self, count: int, timeout: float = 15.0) -> List[email.message.EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            assert time.monotonic() < deadline, "%d mails arrived, expected %d" \
                % (len(self.messages), count)
            time.sleep(0.05)
        return self.messages


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def inbox() -> Iterator[tuple]:
    box = Inbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, authenticator=box.authenticate,
                            auth_require_tls=False, auth_required=True)
    controller.start()
    yield box, port
    controller.stop()


def mail_jobs(tmp_path: Path, port: int) -> Jobs:
    settings = make_settings(tmp_path / "data", smtp_host="127.0.0.1", smtp_port=port,
                             smtp_user=SMTP_USER, smtp_password=SMTP_PASSWORD,
                             smtp_from="workbench@example.com")
    return start_jobs(build_api(settings))


def close(j: Jobs) -> None:
    scheduler.stop(j.api.client.app.state.server)
    j.api.db.engine.dispose()


def test_failure_success_and_timeout_mails_carry_the_log_tail(tmp_path: Path, inbox: tuple) -> None:
    box, port = inbox
    j = mail_jobs(tmp_path, port)
    try:
        j.script("etl.py", "import sys\nfor i in range(60):\n    print('row-%03d' % i)\n"
                           "sys.exit(2)\n")
        j.script("ok.sh", "echo all good\n")
        j.script("slow.sh", "echo waiting\nsleep 30\n")
        etl = j.create(name="etl", script="etl.py", recipients=["ops@example.com",
                                                                "lead@example.com"])
        ok = j.create(name="ok", script="ok.sh", recipients=["ops@example.com"])  # failures only
        ok_loud = j.create(name="ok-loud", script="ok.sh", recipients=["ops@example.com"],
                           notify_on=["success"])
        slow = j.create(name="slow", script="slow.sh", recipients=["ops@example.com"],
                        timeout_minutes=1)

        run = j.wait(etl["id"], j.run(etl["id"])["id"])
        assert run["status"] == "failed"
        [mail] = box.wait(1)
        assert mail["Subject"] == "[CDSW] job etl failed"
        assert mail["From"] == "workbench@example.com"
        assert mail["To"] == "ops@example.com, lead@example.com"
        text = mail.get_content()
        assert "Status: failed" in text and "Exit code: 2" in text and "Duration: " in text
        assert "row-010" in text and "row-059" in text and "row-009" not in text  # last 50 lines
        assert box.logins == [SMTP_USER]

        assert j.wait(ok["id"], j.run(ok["id"])["id"])["status"] == "succeeded"
        assert j.wait(ok_loud["id"], j.run(ok_loud["id"])["id"])["status"] == "succeeded"
        mails = box.wait(2)
        time.sleep(0.3)  # a mail for "ok" would have arrived by now
        assert [m["Subject"] for m in mails] == ["[CDSW] job etl failed",
                                                 "[CDSW] job ok-loud succeeded"]
        assert "all good" in mails[1].get_content()

        run = j.run(slow["id"])
        j.wait_log(slow["id"], run["id"], "waiting")
        j.clock.advance(minutes=2)
        assert j.wait(slow["id"], run["id"])["status"] == "timed_out"
        mail = box.wait(3)[2]
        assert mail["Subject"] == "[CDSW] job slow timed out" and "waiting" in mail.get_content()
    finally:
        close(j)


def test_a_mail_that_cannot_be_sent_never_fails_the_run(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    j = mail_jobs(tmp_path, free_port())  # nothing listens there
    try:
        j.script("ok.py", "print('fine')\n")
        job = j.create(name="ok", script="ok.py", recipients=["ops@example.com"],
                       notify_on=["success"])
        with caplog.at_level(logging.WARNING, logger="cdsw_agent.jobs.notify"):
            run = j.wait(job["id"], j.run(job["id"])["id"])
            deadline = time.monotonic() + 10
            while "cannot send" not in caplog.text:
                assert time.monotonic() < deadline, caplog.text
                time.sleep(0.05)
        assert run["status"] == "succeeded" and run["exit_code"] == 0
        assert "[CDSW] job ok succeeded" in caplog.text and "127.0.0.1" in caplog.text
        assert SMTP_PASSWORD not in caplog.text
    finally:
        close(j)


def test_mail_errors_are_redacted(monkeypatch: pytest.MonkeyPatch,
                                  caplog: pytest.LogCaptureFixture) -> None:
    from cdsw_agent.jobs import notify

    class Settings:
        smtp_host, smtp_port, smtp_user, smtp_password = "127.0.0.1", 25, "u", "p4ssw0rd"
        smtp_starttls, smtp_from = False, "a@b"

        def secret_values(self) -> list:
            return [self.smtp_password]

    def refusing(*args: Any, **kwargs: Any) -> Any:
        raise OSError("login as u with p4ssw0rd refused")

    monkeypatch.setattr(notify.smtplib, "SMTP", refusing)
    with caplog.at_level(logging.WARNING, logger="cdsw_agent.jobs.notify"):
        assert notify.send(Settings(), ["x@y"], "subject", "text") is False
    assert "refused" in caplog.text and "****" in caplog.text and "p4ssw0rd" not in caplog.text


def _self_signed(directory: Path) -> tuple:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "smtp.crt", directory / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_starttls_then_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    from cdsw_agent.jobs import notify

    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(str(cert), str(key))
    box, port = Inbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, tls_context=server_tls,
                            require_starttls=True, authenticator=box.authenticate,
                            auth_required=True)
    controller.start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts this server only
        tls = make_settings(tmp_path / "data", smtp_host="127.0.0.1", smtp_port=port,
                            smtp_user=SMTP_USER, smtp_password=SMTP_PASSWORD, smtp_starttls=True)
        assert notify.send(tls, ["ops@example.com"], "[CDSW] job x succeeded", "body") is True
        assert [m["Subject"] for m in box.wait(1)] == ["[CDSW] job x succeeded"]
        assert box.logins == [SMTP_USER]
        # without STARTTLS this server refuses the mail: the setting really switches TLS on
        plain = tls.with_overrides(smtp_starttls=False)
        assert notify.send(plain, ["ops@example.com"], "[CDSW] job x failed", "body") is False
        assert len(box.messages) == 1
    finally:
        controller.stop()
