"""pytest fixtures for a real slapd. Use from a test module:

    from .ldap_fixtures import *  # noqa: F401,F403  (pytest fixtures)
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from cdsw_agent.settings import load_settings

from .slapd import SlapdError, SlapdServer, SlapdUnavailable, find_installation, start_slapd

__all__ = ["slapd_server", "slapd_wrong_host", "ldap_settings"]


def _start(tmp_path_factory: pytest.TempPathFactory, name: str, **kwargs: Any) -> SlapdServer:
    try:
        find_installation()
    except SlapdUnavailable as e:
        pytest.skip("LDAP integration tests need OpenLDAP: %s" % e)
    try:
        return start_slapd(tmp_path_factory.mktemp(name), **kwargs)
    except SlapdError as e:  # installed but broken: that is a failure, not a skip
        pytest.fail("could not start slapd: %s" % e, pytrace=False)


@pytest.fixture(scope="session")
def slapd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    """A slapd on 127.0.0.1 with ldap:// (StartTLS-capable) and ldaps:// listeners."""
    server = _start(tmp_path_factory, "slapd")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def slapd_wrong_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    """A slapd whose certificate (from a trusted CA) names another host."""
    server = _start(tmp_path_factory, "slapd-wrong-host", tls_hosts=("ldap.elsewhere.invalid",))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ldap_settings(slapd_server: SlapdServer, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Settings for slapd_server over plain ldap:// with the service account; derive variants
    with .with_overrides(). Empty config files, so a machine's /etc/cdsw config is ignored."""
    d = tmp_path_factory.mktemp("ldap-settings")
    (d / "cdsw.conf").write_text("")
    (d / "cdsw.properties").write_text("")
    return load_settings(conf_path=str(d / "cdsw.conf"), properties_path=str(d / "cdsw.properties"),
                         environ={}).with_overrides(
        ldap_url=slapd_server.url,
        ldap_bind_dn=slapd_server.bind_dn,
        ldap_bind_password=slapd_server.bind_password,
        ldap_user_search_base=slapd_server.people_dn,
        ldap_admin_group_dn=slapd_server.admin_group_dn,
    )


def require_tls(server: SlapdServer) -> None:
    if not server.tls:
        pytest.skip("TLS tests need the cryptography package or the openssl CLI to make certificates")
