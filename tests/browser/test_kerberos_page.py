"""Account > Hadoop Authentication in a real browser, against a real MIT KDC: a wrong password
and another principal's keytab are refused in one line next to the form, the right password
shows the principal and a valid ticket, and the credential can be removed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any, Dict, Iterator

import pytest
import requests
from playwright.sync_api import Page, expect

from ..integration.kdc import start_kdc
from .conftest import ROOT, Console, _free_port, screenshot, sign_in


@pytest.fixture(scope="module")
def krb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("krbpage")
    kdc = start_kdc(tmp / "kdc")
    try:
        kdc.add_principal("alice", "alice-Krb-pw1")
        kdc.add_principal("carol")
        keytab = kdc.keytab("carol", tmp / "carol.keytab")
        port = _free_port()
        log = tmp / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDSW_")}
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "tests.browser.kerberos_server",
                                     str(tmp / "data"), str(port), str(kdc.krb5_conf)],
                                    cwd=str(ROOT), env=env, stdout=out, stderr=subprocess.STDOUT)
        url = "http://127.0.0.1:%d" % port
        deadline = time.monotonic() + 120  # a busy machine starts slowly
        while True:
            if proc.poll() is not None:
                pytest.fail("the test server exited: %s" % log.read_text()[-3000:])
            try:
                if requests.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("the test server did not answer within 120 s: %s"
                            % log.read_text()[-3000:])
            time.sleep(0.2)
        yield {"url": url, "keytab": keytab}
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    finally:
        kdc.stop()


@pytest.fixture
def server(krb: Dict[str, Any]) -> Any:  # the page fixture opens this server
    class S:
        url = krb["url"]
    return S()


def test_hadoop_authentication_page(page: Page, console: Console, krb: Dict[str, Any]) -> None:
    console.allow(r"status of 422")  # the wrong password is refused on purpose
    console.allow(r"status of 400")  # so is carol's keytab for alice
    sign_in(page, "alice")
    page.goto("/account")
    page.get_by_role("link", name="Hadoop Authentication").click()
    page.wait_for_url("**/account/hadoop-authentication")
    expect(page.get_by_role("heading", name="Hadoop Authentication")).to_be_visible()
    expect(page.locator("#krb-realm")).to_have_text("CDSW.TEST")
    expect(page.locator("#krb-principal")).to_have_text("none")

    form = page.locator("#krb-form")
    form.get_by_label("Principal").fill("alice")
    form.get_by_label("Kerberos password").fill("not-her-password")
    form.get_by_role("button", name="Save").click()
    expect(form.get_by_role("alert")).to_have_text(
        "the password for alice@CDSW.TEST is wrong (the KDC refused it)")
    expect(page.locator("#krb-principal")).to_have_text("none")

    # a keytab of another principal: the file field replaces the password field
    form.get_by_label("keytab", exact=True).check()
    expect(form.get_by_label("Kerberos password")).to_be_hidden()
    form.get_by_label("Keytab file").set_input_files(str(krb["keytab"]))
    form.get_by_role("button", name="Save").click()
    expect(form.get_by_role("alert")).to_have_text(
        "the keytab holds no key for alice@CDSW.TEST: export a keytab for this principal "
        "(ktutil or kadmin ktadd)")

    # the right password: the page shows the principal and a valid ticket, never the password
    form.get_by_label("password", exact=True).check()
    form.get_by_label("Kerberos password").fill("alice-Krb-pw1")
    form.get_by_role("button", name="Save").click()
    expect(page.locator("#krb-principal")).to_have_text("alice@CDSW.TEST")
    expect(page.locator("#krb-state")).to_contain_text("valid until")
    assert "alice-Krb-pw1" not in page.content()
    screenshot(page, "hadoop-authentication")

    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Remove credential").click()
    expect(page.locator("#krb-principal")).to_have_text("none")

    # without a credential, a new session's console says so in one line
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    headers = {"X-CSRF-Token": token or ""}
    r = page.request.post("/api/v1/projects", data={"name": "krb"}, headers=headers)
    assert r.status == 201, r.text()
    pid = r.json()["id"]
    r = page.request.post("/api/v1/projects/%d/sessions" % pid, data={}, headers=headers)
    assert r.status == 201, r.text()
    page.goto("/projects/%d/sessions/%d" % (pid, r.json()["id"]))
    expect(page.locator("#console-output")).to_contain_text(
        "Kerberos: alice has no Kerberos credential, so this engine has no ticket and Hadoop "
        "refuses it; add your principal with a password or keytab under Account > Hadoop "
        "Authentication, then start it again", timeout=60000)
