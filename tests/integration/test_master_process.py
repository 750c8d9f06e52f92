"""The master as an admin runs it: `cdsw standalone` and `cdsw role master start` as processes."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import requests

from ..conftest import NO_FREE_SPACE_THRESHOLDS

CDSW = [sys.executable, "-m", "cdsw_agent.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(tmp: Path, **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSW_")}
    env.update(NO_FREE_SPACE_THRESHOLDS)
    env.update({"CDSW_ARGON2_TIME_COST": "1", "CDSW_ARGON2_MEMORY_KIB": "1024", "CDSW_ORCHESTRATOR": "local",
                "CDSW_CONF": str(tmp / "empty.conf"), "CDSW_PROPERTIES": str(tmp / "empty.properties"),
                "CDSW_ENGINE_PORT": str(free_port())})  # the engine-content listener
    (tmp / "empty.conf").write_text("")
    (tmp / "empty.properties").write_text("")
    env.update(extra)
    return env


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 30, **kw) -> requests.Response:  # type: ignore[type-arg]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError("process exited with %s: %s" % (proc.returncode, proc.stdout.read()))
        try:
            return requests.get(url, timeout=2, **kw)
        except requests.RequestException:
            time.sleep(0.2)
    raise AssertionError("no answer from %s" % url)


def stop(proc: subprocess.Popen) -> str:  # type: ignore[type-arg]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    return out


def start(args: List[str], env: Dict[str, str]) -> subprocess.Popen:  # type: ignore[type-arg]
    return subprocess.Popen(CDSW + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_standalone_prints_admin_who_can_sign_in(tmp_path: Path) -> None:
    port = free_port()
    env = env_for(tmp_path)
    proc = start(["standalone", "--data-dir", str(tmp_path / "data"), "--port", str(port)], env)
    try:
        r = wait_for("http://127.0.0.1:%d/healthz" % port, proc)
        assert r.status_code == 200 and r.json()["status"] == "ok"
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    assert "CDSW workbench: http://localhost:%d" % port in out
    password = out.split("password:")[1].split()[0]
    # the password is printed once, on stdout, and never goes through the log
    log_lines = [ln for ln in out.splitlines() if " INFO " in ln or " WARNING " in ln]
    assert not any(password in ln for ln in log_lines)

    proc = start(["standalone", "--data-dir", str(tmp_path / "data"), "--port", str(port)], env)
    try:
        wait_for("http://127.0.0.1:%d/healthz" % port, proc)
        r = requests.post("http://127.0.0.1:%d/api/v1/auth/signin" % port,
                          json={"username": "admin", "password": password}, timeout=5)
        assert r.status_code == 200 and r.json()["user"]["is_admin"]
        status = subprocess.run(CDSW + ["role", "master", "status"], capture_output=True, text=True,
                                env=dict(env, CDSW_HTTP_PORT=str(port), CDSW_BIND_ADDRESS="127.0.0.1"))
        assert status.returncode == 0 and "running" in status.stdout
    finally:
        out = stop(proc)
    assert "exists already" in out and password not in out
    status = subprocess.run(CDSW + ["role", "master", "status"], capture_output=True, text=True,
                            env=dict(env, CDSW_HTTP_PORT=str(port)))
    assert status.returncode == 3


def _self_signed(tmp: Path) -> tuple:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_master_role_serves_https_and_upgrades_schema(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    props = tmp_path / "cdsw.properties"
    props.write_text("cdsw.data.dir=%s\ncdsw.http.port=%d\ncdsw.bind.address=127.0.0.1\n"
                     "cdsw.tls.enable=true\ncdsw.tls.cert=%s\ncdsw.tls.key=%s\n"
                     % (tmp_path / "data", port, cert, key))
    env = env_for(tmp_path, CDSW_PROPERTIES=str(props))
    proc = start(["role", "master", "start"], env)
    try:
        r = wait_for("https://127.0.0.1:%d/healthz" % port, proc, verify=cert)
        assert r.status_code == 200 and r.json()["checks"]["database"] == "ok"
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    assert (tmp_path / "data" / "cdsw.db").exists()


def test_master_refuses_bad_config_and_busy_port(tmp_path: Path) -> None:
    props = tmp_path / "cdsw.properties"
    props.write_text("cdsw.http.port=99999\n")
    r = subprocess.run(CDSW + ["role", "master", "start"], env=env_for(tmp_path, CDSW_PROPERTIES=str(props)),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip() == ("cdsw: configuration error: cdsw.http.port in %s:1: invalid value '99999': "
                                "expected an integer from 1 to 65535" % props)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = subprocess.run(CDSW + ["role", "master", "start"], capture_output=True, text=True, timeout=30,
                           env=env_for(tmp_path, CDSW_DATA_DIR=str(tmp_path / "d"), CDSW_HTTP_PORT=str(port),
                                       CDSW_BIND_ADDRESS="127.0.0.1"))
    assert r.returncode == 1 and "port %d on 127.0.0.1 is already in use" % port in r.stderr
