"""cdsw_agent.security.ldap_auth against a real slapd (see slapd.py for the directory's contents)."""

from __future__ import annotations

import socket
from typing import Any, Iterator

import pytest

from cdsw_agent.security import ldap_auth
from cdsw_agent.security.ldap_auth import LdapIdentity, LdapUnavailable, authenticate, check_connection

from .ldap_fixtures import *  # noqa: F401,F403  (pytest fixtures)
from .ldap_fixtures import require_tls
from .slapd import POSIX_GROUP_DN, UNIQUE_GROUP_DN, SlapdServer, free_port

pytestmark = pytest.mark.ldap


def login(settings: Any, server: SlapdServer, key: str, username: str = "") -> Any:
    """authenticate() with the directory user's right password."""
    user = server.users[key]
    return authenticate(settings, username or user.uid, user.password)


def assert_clean(message: str, *secrets: str) -> None:
    assert "\n" not in message
    for secret in secrets:
        assert secret not in message


# --- who gets in ----------------------------------------------------------------------------

def test_right_password_gives_identity(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    identity = login(ldap_settings, slapd_server, "alice")
    assert identity == LdapIdentity(username="alice", dn="uid=alice,ou=people,dc=cdsw,dc=test",
                                    email="alice@cdsw.test", full_name="Alice Liddell", is_admin=True)


def test_username_is_directory_uid_normalized(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    identity = login(ldap_settings, slapd_server, "carol", username="  CAROL ")
    assert identity is not None
    assert identity.username == "carol"
    assert identity.dn == "uid=Carol,ou=people,dc=cdsw,dc=test"
    assert identity.email is None  # carol has no mail attribute
    assert identity.full_name == "Carol Danvers"


def test_non_ascii_password_and_dn_with_special_characters(ldap_settings: Any,
                                                          slapd_server: SlapdServer) -> None:
    identity = login(ldap_settings, slapd_server, "dan")
    assert identity is not None
    assert identity.username == "dan"
    assert identity.full_name == "Dan (Ops) Smith, Jr"


def test_login_attribute_comes_from_filter(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    settings = ldap_settings.with_overrides(ldap_user_filter="(|(uid={username})(mail={username}))")
    identity = login(settings, slapd_server, "bob", username="bob@cdsw.test")
    assert identity is not None
    assert identity.username == "bob"


def test_custom_attributes(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    settings = ldap_settings.with_overrides(ldap_email_attribute="uid", ldap_fullname_attribute="sn")
    identity = login(settings, slapd_server, "alice")
    assert identity is not None
    assert (identity.email, identity.full_name) == ("alice", "Liddell")


def test_anonymous_search_bind(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    settings = ldap_settings.with_overrides(ldap_bind_dn="", ldap_bind_password="")
    identity = login(settings, slapd_server, "bob")
    assert identity is not None and identity.dn == slapd_server.users["bob"].dn


# --- who does not ---------------------------------------------------------------------------

def test_wrong_password(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    assert authenticate(ldap_settings, "alice", "not-alices-password") is None
    assert authenticate(ldap_settings, "alice", slapd_server.users["bob"].password) is None


@pytest.mark.parametrize("password", ["", None])
def test_empty_password_is_refused(ldap_settings: Any, monkeypatch: pytest.MonkeyPatch, password: Any) -> None:
    # A DN with an empty password is an unauthenticated bind, which this slapd accepts
    # (allow bind_anon_cred) as Active Directory does: it must never reach the server.
    def no_bind(*args: Any) -> bool:
        raise AssertionError("empty password was sent to the directory")

    monkeypatch.setattr(ldap_auth, "_user_bind", no_bind)
    assert authenticate(ldap_settings, "alice", password) is None


def test_unknown_user(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    assert authenticate(ldap_settings, "mallory", "whatever-1") is None
    assert authenticate(ldap_settings, "", slapd_server.users["alice"].password) is None


@pytest.mark.parametrize("username", ["alic*", "*", "alice)(uid=*", "*)(uid=alice", "alice\\", "ali\x00ce",
                                      "(uid=alice)"])
def test_filter_metacharacters_do_not_inject(ldap_settings: Any, slapd_server: SlapdServer,
                                             username: str) -> None:
    # unescaped, "alic*" would match alice alone and her password would sign in
    assert authenticate(ldap_settings, username, slapd_server.users["alice"].password) is None


def test_filter_matching_several_entries_is_refused(ldap_settings: Any) -> None:
    settings = ldap_settings.with_overrides(ldap_user_filter="(cn={username})")
    assert authenticate(settings, "Twin", "twin-pw") is None
    # the same filter works when it matches one entry
    assert authenticate(settings, "Alice Liddell", "alice-pw-1") is not None


# --- administrators -------------------------------------------------------------------------

def test_group_of_names_membership(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    assert login(ldap_settings, slapd_server, "alice").is_admin is True
    for key in ("bob", "carol", "dan"):
        assert login(ldap_settings, slapd_server, key).is_admin is False, key


def test_group_of_unique_names_membership(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    settings = ldap_settings.with_overrides(ldap_admin_group_dn=UNIQUE_GROUP_DN)
    assert login(settings, slapd_server, "bob").is_admin is True
    assert login(settings, slapd_server, "dan").is_admin is True  # DN with ( ) and an escaped comma
    assert login(settings, slapd_server, "alice").is_admin is False


def test_posix_group_membership(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    settings = ldap_settings.with_overrides(ldap_admin_group_dn=POSIX_GROUP_DN)
    assert login(settings, slapd_server, "carol", username="carol").is_admin is True
    assert login(settings, slapd_server, "alice").is_admin is False


def test_no_admin_group_means_no_admins(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    settings = ldap_settings.with_overrides(ldap_admin_group_dn="")
    assert login(settings, slapd_server, "alice").is_admin is False


def test_missing_admin_group_means_no_admins(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    settings = ldap_settings.with_overrides(ldap_admin_group_dn="cn=gone,ou=groups,dc=cdsw,dc=test")
    identity = login(settings, slapd_server, "alice")
    assert identity is not None and identity.is_admin is False


# --- directory unusable ---------------------------------------------------------------------

def test_service_account_wrong_password(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    bad = "wrong-service-pw-42"
    settings = ldap_settings.with_overrides(ldap_bind_password=bad)
    with pytest.raises(LdapUnavailable) as err:
        login(settings, slapd_server, "alice")
    message = str(err.value)
    assert "ldap_bind_password" in message and "invalidCredentials" in message
    assert_clean(message, bad, slapd_server.users["alice"].password)
    with pytest.raises(LdapUnavailable):
        check_connection(settings)


def test_server_down(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    settings = ldap_settings.with_overrides(ldap_url="ldap://127.0.0.1:%d" % free_port())
    with pytest.raises(LdapUnavailable) as err:
        login(settings, slapd_server, "alice")
    assert "cannot reach LDAP server" in str(err.value)
    assert_clean(str(err.value), slapd_server.bind_password, slapd_server.users["alice"].password)


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts TCP connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def test_server_not_answering_times_out(ldap_settings: Any, monkeypatch: pytest.MonkeyPatch,
                                        silent_listener: int) -> None:
    monkeypatch.setattr(ldap_auth, "CONNECT_TIMEOUT", 1)
    monkeypatch.setattr(ldap_auth, "RECEIVE_TIMEOUT", 1)
    settings = ldap_settings.with_overrides(ldap_url="ldap://127.0.0.1:%d" % silent_listener)
    with pytest.raises(LdapUnavailable, match="did not answer in time"):
        authenticate(settings, "alice", "alice-pw-1")


def test_missing_search_base(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    settings = ldap_settings.with_overrides(ldap_user_search_base="ou=nobody,dc=cdsw,dc=test")
    with pytest.raises(LdapUnavailable, match="does not exist"):
        login(settings, slapd_server, "alice")


@pytest.mark.parametrize("flt, match", [("(uid=user)", "must contain"), ("(uid={username}", "not a valid")])
def test_bad_user_filter(ldap_settings: Any, flt: str, match: str) -> None:
    with pytest.raises(LdapUnavailable, match=match):
        authenticate(ldap_settings.with_overrides(ldap_user_filter=flt), "alice", "alice-pw-1")


def test_ldap_off(ldap_settings: Any) -> None:
    with pytest.raises(LdapUnavailable, match="ldap_url is empty"):
        authenticate(ldap_settings.with_overrides(ldap_url=""), "alice", "alice-pw-1")


# --- TLS ------------------------------------------------------------------------------------

def test_ldaps_with_ca(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    require_tls(slapd_server)
    settings = ldap_settings.with_overrides(ldap_url=slapd_server.ldaps_url, ldap_ca_cert=slapd_server.ca_cert)
    identity = login(settings, slapd_server, "alice")
    assert identity is not None and identity.is_admin is True
    assert "certificate verified" in check_connection(settings)


def test_ldaps_by_host_name(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    require_tls(slapd_server)
    settings = ldap_settings.with_overrides(ldap_url="ldaps://localhost:%d" % slapd_server.ldaps_port,
                                            ldap_ca_cert=slapd_server.ca_cert)
    assert login(settings, slapd_server, "bob") is not None


def test_ldaps_unverified_certificate(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    require_tls(slapd_server)
    settings = ldap_settings.with_overrides(ldap_url=slapd_server.ldaps_url)  # verify on, no CA
    with pytest.raises(LdapUnavailable) as err:
        login(settings, slapd_server, "alice")
    assert "certificate" in str(err.value) and "ldap_ca_cert" in str(err.value)
    assert_clean(str(err.value), slapd_server.bind_password)


def test_ldaps_verification_off(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    require_tls(slapd_server)
    settings = ldap_settings.with_overrides(ldap_url=slapd_server.ldaps_url, ldap_tls_verify=False)
    assert login(settings, slapd_server, "alice") is not None
    assert "NOT verified" in check_connection(settings)


def test_ldaps_certificate_for_another_host(ldap_settings: Any, slapd_wrong_host: SlapdServer) -> None:
    require_tls(slapd_wrong_host)
    settings = ldap_settings.with_overrides(ldap_url=slapd_wrong_host.ldaps_url,
                                            ldap_ca_cert=slapd_wrong_host.ca_cert)
    with pytest.raises(LdapUnavailable, match="does not match its host name"):
        login(settings, slapd_wrong_host, "alice")


def test_missing_ca_file(ldap_settings: Any, slapd_server: SlapdServer, tmp_path: Any) -> None:
    settings = ldap_settings.with_overrides(ldap_url=slapd_server.ldaps_url,
                                            ldap_ca_cert=str(tmp_path / "nope.pem"))
    with pytest.raises(LdapUnavailable, match="ldap_ca_cert .* does not exist"):
        login(settings, slapd_server, "alice")


def test_starttls(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    require_tls(slapd_server)
    settings = ldap_settings.with_overrides(ldap_starttls=True, ldap_ca_cert=slapd_server.ca_cert)
    identity = login(settings, slapd_server, "dan")
    assert identity is not None and identity.username == "dan"
    assert "StartTLS, certificate verified" in check_connection(settings)


def test_starttls_unverified_certificate(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    require_tls(slapd_server)
    settings = ldap_settings.with_overrides(ldap_starttls=True)
    with pytest.raises(LdapUnavailable, match="certificate"):
        login(settings, slapd_server, "alice")


# --- health check ---------------------------------------------------------------------------

def test_check_connection(ldap_settings: Any, slapd_server: SlapdServer) -> None:
    summary = check_connection(ldap_settings)
    assert slapd_server.bind_dn in summary and "no TLS" in summary
    with pytest.raises(LdapUnavailable, match="ldap_admin_group_dn"):
        check_connection(ldap_settings.with_overrides(ldap_admin_group_dn="cn=gone,dc=cdsw,dc=test"))
