"""The Docker role's firewall rules cover every port engines publish, for connections opened
from containers only (the master's connections and their replies pass)."""

from __future__ import annotations

from cdsw_agent.models.replicas import PORT_RANGE as MODEL_PORTS
from cdsw_agent.roles.engine_firewall import CONTAINER_INTERFACES, ENGINE_PORTS, chain_rules
from cdsw_agent.sessions.launch import SESSION_PORT_RANGE


def test_rules_cover_session_and_model_ports_from_every_container_interface() -> None:
    low, high = ENGINE_PORTS
    for first, last in (SESSION_PORT_RANGE, MODEL_PORTS):
        assert low <= first and last <= high
    rules = chain_rules()
    assert [r[r.index("-i") + 1] for r in rules] == list(CONTAINER_INTERFACES)
    for rule in rules:
        assert rule[-2:] == ["-j", "DROP"]
        assert rule[rule.index("--ctdir") + 1] == "ORIGINAL"  # never the master's replies
        assert rule[rule.index("--ctorigdstport") + 1] == "%d:%d" % ENGINE_PORTS  # after DNAT too


def test_driver_ports_are_the_ones_engines_publish_for_spark() -> None:
    from cdsw_agent.roles.engine_firewall import DRIVER_PORTS
    from cdsw_agent.workloads.engine import SPARK_PORT_RANGE

    assert DRIVER_PORTS == SPARK_PORT_RANGE
    assert ENGINE_PORTS[1] < DRIVER_PORTS[0]


def test_driver_rules_refuse_containers_and_with_a_list_every_other_source() -> None:
    from cdsw_agent.roles.engine_firewall import DRIVER_CHAIN, DRIVER_PORTS, driver_rules

    jumps, rules = driver_rules()
    # only new connections to a driver port OF THIS NODE go to the chain: local (docker-proxy)
    # or DNATed to a container here; an engine's own connection to a port in that range on
    # another host (Impala's 21050) is neither, and passes
    assert len(jumps) == 2 and all(j[-2:] == ["-j", DRIVER_CHAIN] for j in jumps)
    assert ["--dst-type", "LOCAL"] == jumps[0][jumps[0].index("addrtype") + 1:][:2]
    assert jumps[1][jumps[1].index("--ctstate") + 1] == "DNAT"
    for j in jumps:
        assert j[j.index("--ctdir") + 1] == "ORIGINAL"
        assert j[j.index("--ctorigdstport") + 1] == "%d:%d" % DRIVER_PORTS
    # without a list: containers (other engines) are refused, hosts are not
    assert rules == [["-i", iface, "-j", "DROP"] for iface in CONTAINER_INTERFACES]

    _, rules = driver_rules(["10.20.0.0/16", "10.30.1.7"])
    assert rules[:len(CONTAINER_INTERFACES)] == [["-i", i, "-j", "DROP"]
                                                  for i in CONTAINER_INTERFACES]
    assert rules[len(CONTAINER_INTERFACES):] == [
        ["-i", "lo", "-j", "RETURN"], ["-s", "10.20.0.0/16", "-j", "RETURN"],
        ["-s", "10.30.1.7", "-j", "RETURN"], ["-j", "DROP"]]


def test_driver_networks_setting_is_checked() -> None:
    import pytest

    from cdsw_agent.settings import load_settings

    s = load_settings(environ={"CDSW_SPARK_DRIVER_ALLOWED_NETWORKS": "10.20.0.0/16,10.30.1.7"})
    assert s.spark_driver_allowed_networks == ["10.20.0.0/16", "10.30.1.7"]
    for bad in ("10.20.0.0/16,workers", "fd00::/8"):
        with pytest.raises(Exception, match="not an IPv4 address or network"):
            load_settings(environ={"CDSW_SPARK_DRIVER_ALLOWED_NETWORKS": bad})
