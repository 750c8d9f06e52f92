"""The Docker role's firewall rules cover every port engines publish, for connections opened
from containers only (the master's connections and their replies pass); once a node knows the
CDSW nodes, only connections to this node and to them are dropped (engine_firewall)."""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from typing import List

import pytest

from cdsw_agent.models.replicas import PORT_RANGE as MODEL_PORTS
from cdsw_agent.roles.engine_firewall import (CHAIN, CONTAINER_INTERFACES, ENGINE_PORTS,
                                              NODES_CHAIN, NodeFirewall, chain_rules,
                                              node_addresses, node_rules, restore_input)
from cdsw_agent.sessions.launch import SESSION_PORT_RANGE


def test_rules_cover_session_and_model_ports_from_every_container_interface() -> None:
    low, high = ENGINE_PORTS
    for first, last in (SESSION_PORT_RANGE, MODEL_PORTS):
        assert low <= first and last <= high
    for nodes, target in ((None, "DROP"), (["10.0.0.2"], NODES_CHAIN), ([], NODES_CHAIN)):
        rules = chain_rules(nodes)
        assert [r[r.index("-i") + 1] for r in rules] == list(CONTAINER_INTERFACES)
        for rule in rules:
            assert rule[-2:] == ["-j", target]
            assert rule[rule.index("--ctdir") + 1] == "ORIGINAL"  # never the master's replies
            assert rule[rule.index("--ctorigdstport") + 1] == "%d:%d" % ENGINE_PORTS  # DNAT too


def test_known_nodes_narrow_the_drop_to_this_node_and_the_cdsw_nodes() -> None:
    """Until the node list is known every destination is dropped (chain_rules(None)); then
    NODES_CHAIN drops this host's addresses (docker-proxy), what Docker DNATed to a container
    here, and the CDSW nodes' addresses: an HBase region server's 16020 on another host is none
    of them and passes (it falls off the end of NODES_CHAIN)."""
    rules = node_rules(["10.0.0.3", "10.0.0.2"])
    assert rules == [["-m", "addrtype", "--dst-type", "LOCAL", "-j", "DROP"],
                     ["-m", "conntrack", "--ctstate", "DNAT", "-j", "DROP"],
                     ["-d", "10.0.0.2/32", "-j", "DROP"], ["-d", "10.0.0.3/32", "-j", "DROP"]]
    assert all(r[-2:] == ["-j", "DROP"] for r in rules)  # nothing RETURNs or ACCEPTs early
    assert node_rules([]) == rules[:2]  # a one-node swarm: this node only


def test_node_addresses_keep_ipv4_host_addresses_only() -> None:
    assert node_addresses(["10.0.0.3", "10.0.0.2:2377", "10.0.0.3", "0.0.0.0", "",
                           "127.0.0.1", "fd00::1", "h2.example.com", "10.0.0.0/8",
                           "10.0.0.4 -j ACCEPT", "224.0.0.1"]) == ["10.0.0.2", "10.0.0.3"]


def test_restore_input_replaces_both_chains_in_one_transaction() -> None:
    from cdsw_agent.roles.engine_firewall import driver_rules

    narrow = restore_input(["10.0.0.2"]).splitlines()
    assert narrow[:3] == ["*filter", ":%s - [0:0]" % CHAIN, ":%s - [0:0]" % NODES_CHAIN]
    assert narrow[-1] == "COMMIT"  # one commit: all or nothing
    chain = [ln.split()[2:] for ln in narrow if ln.startswith("-A %s " % CHAIN)]
    # the Spark driver jumps stay in CHAIN after the rewrite
    assert chain == chain_rules(["10.0.0.2"]) + driver_rules()[0]
    nodes = [ln.split()[2:] for ln in narrow if ln.startswith("-A %s " % NODES_CHAIN)]
    assert nodes == node_rules(["10.0.0.2"])

    broad = restore_input(None).splitlines()
    assert [ln.split()[2:] for ln in broad if ln.startswith("-A %s " % CHAIN)] == \
        chain_rules(None) + driver_rules()[0]
    assert not [ln for ln in broad if ln.startswith("-A %s " % NODES_CHAIN)]


FAKE_IPTABLES = """#!/bin/sh
# records each call and iptables-restore's input; exit codes from the files rc (restore),
# rc-check (iptables -C) and rc-list (iptables -L), 0 without them
dir=$(dirname "$0")
echo "$(basename "$0") $*" >> "$dir/calls"
code() { cat "$dir/$1" 2>/dev/null || echo 0; }
case "$(basename "$0")" in
  *-restore) cat > "$dir/input-$(wc -l < "$dir/calls" | tr -d ' ')"; exit "$(code rc)";;
esac
case " $* " in
  *" -C "*) exit "$(code rc-check)";;
  *" -L "*) exit "$(code rc-list)";;
esac
exit 0
"""


@pytest.fixture
def fake_iptables(tmp_path: Path) -> Path:
    """iptables and iptables-restore that record their calls (the real ones, in a lab, are
    exercised by tests/integration/test_three_hosts.py)."""
    for name in ("iptables", "iptables-restore"):
        path = tmp_path / name
        path.write_text(FAKE_IPTABLES)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def _restores(d: Path) -> List[str]:
    return sorted((p for p in d.iterdir() if p.name.startswith("input-")),
                  key=lambda p: int(p.name.split("-")[1]))


def test_node_firewall_narrows_once_learnt_and_keeps_the_broad_rule_on_failure(
        fake_iptables: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = fake_iptables
    fw = NodeFirewall(str(d / "iptables"))
    caplog.set_level(logging.INFO, logger="cdsw_agent.roles.engine_firewall")

    assert fw.update(None) is False  # nothing learnt: the Docker role's broad rule stands
    assert not (d / "calls").exists()

    assert fw.update(["10.0.0.3", "10.0.0.2"]) is True
    [first] = _restores(d)
    assert first.read_text() == restore_input(["10.0.0.2", "10.0.0.3"])
    assert "-w --noflush" in (d / "calls").read_text()
    assert fw.update(["10.0.0.2", "10.0.0.3"]) is True  # same list, still in force: no rewrite
    assert len(_restores(d)) == 1
    assert fw.update(None) is True  # a master that could not list its nodes: keep the list

    fw.update(["10.0.0.2", "10.0.0.3", "10.0.0.4"])  # a node joined
    assert _restores(d)[-1].read_text() == restore_input(["10.0.0.2", "10.0.0.3", "10.0.0.4"])

    (d / "rc").write_text("1")  # iptables refuses from now on
    caplog.clear()
    assert fw.update(["10.0.0.2"]) is False
    assert fw.applied is None
    # it tried to put the broad rule back (iptables-restore keeps the old chains on failure)
    assert _restores(d)[-1].read_text() == restore_input(None)
    assert fw.update(["10.0.0.2"]) is False
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, caplog.text  # said once, in one line
    assert "\n" not in errors[0].getMessage()
    assert "stay closed to engines on every host" in errors[0].getMessage()

    (d / "rc").write_text("0")
    assert fw.update(["10.0.0.2"]) is True
    assert _restores(d)[-1].read_text() == restore_input(["10.0.0.2"])
    fw.reset()  # the role stops: broad again
    assert _restores(d)[-1].read_text() == restore_input(None)
    assert fw.applied is None


def test_node_firewall_rewrites_when_the_docker_role_put_the_broad_rule_back(
        fake_iptables: Path) -> None:
    d = fake_iptables
    fw = NodeFirewall(str(d / "iptables"))
    assert fw.update(["10.0.0.2"]) is True
    # `iptables -C CHAIN <narrowed jump>` fails: a restarted Docker role reinstalled the broad
    # rule; the same list is written again
    (d / "rc-check").write_text("1")
    assert fw.update(["10.0.0.2"]) is True
    assert len(_restores(d)) == 2


def test_nothing_is_created_without_the_docker_roles_chains(
        fake_iptables: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = fake_iptables
    (d / "rc-list").write_text("1")
    assert NodeFirewall(str(d / "iptables")).update(["10.0.0.2"]) is False
    assert _restores(d) == []
    assert "nothing to narrow, no chain %s on this host (the CDSW_DOCKER role installs it)" \
        % CHAIN in caplog.text

    caplog.clear()  # no iptables at all: said, not raised
    assert NodeFirewall(str(tmp_path / "nowhere" / "iptables")).update(["10.0.0.2"]) is False
    assert "nothing to narrow" in caplog.text and "No such file" in caplog.text


def test_swarm_node_addresses_include_managers_and_reported_host_addresses() -> None:
    from cdsw_agent.roles.swarm import engine_node_addresses

    class Api:
        def nodes(self) -> list:
            return [
                # Docker may report 0.0.0.0 as a manager's address; its ManagerStatus has it
                {"Status": {"Addr": "0.0.0.0"}, "ManagerStatus": {"Addr": "10.0.0.1:2377"},
                 "Description": {"Hostname": "gw1"}},
                {"Status": {"Addr": "10.0.0.2"}, "Description": {"Hostname": "gw2"}},
                {"Status": {"Addr": "10.0.0.3", "State": "down"},
                 "Description": {"Hostname": "gw3"}}]

    class Client:
        api = Api()

    reported = {"gw2": ["192.168.5.2"], "gone": ["10.0.0.9"]}  # "gone" left the swarm
    assert engine_node_addresses(Client(), reported) == [  # type: ignore[arg-type]
        "10.0.0.1", "10.0.0.2", "10.0.0.3", "192.168.5.2"]


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
