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
