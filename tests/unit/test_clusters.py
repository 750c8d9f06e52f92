"""Several clusters (cdsw_agent/clusters): the default cluster after an upgrade, grants,
placement of every engine on its project's cluster with that cluster's client configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
from sqlalchemy import text

from cdsw_agent import clusters
from cdsw_agent.clientconfig import BUNDLE_LABEL, collect
from cdsw_agent.errors import UserError
from cdsw_agent.orchestrators.base import Node, Orchestrator, WorkloadSpec
from cdsw_agent.orchestrators.swarm import SwarmOrchestrator
from cdsw_agent.settings import Settings
from cdsw_agent.store.db import Database
from cdsw_agent.store.models import EngineImage, Project, Team, TeamMember, User
from cdsw_agent.workloads import EngineError, EngineRequest, build_spec

from ..conftest import make_settings


class FixedNodes(Orchestrator):
    name = "swarm"

    def __init__(self, nodes: List[Node]):
        self._nodes = nodes

    def nodes(self) -> List[Node]:
        return self._nodes

    def launch(self, spec):  # type: ignore[no-untyped-def]
        raise AssertionError("the builder must not launch")

    stop = status = logs = list = remove = launch  # type: ignore[assignment]


def node(name: str, cluster: str = "") -> Node:
    return Node(name=name, address="10.0.0.%d" % (len(name) + 1), state="ready",
                cpu_capacity=4.0, memory_capacity=16 * 2**30, id=name,
                labels={clusters.NODE_LABEL: cluster} if cluster else {})


NODES = [node("master"), node("dev1", "DEV"), node("prod1", "PROD"), node("prod22", "PROD")]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Tuple[Settings, Database]]:
    settings = make_settings(tmp_path / "data", domain="cdsw.example.com")
    db = Database(settings.database_url)
    db.upgrade()
    yield settings, db
    db.engine.dispose()


def add_project(s, owner: User, slug: str, cluster=None) -> Project:  # type: ignore[no-untyped-def]
    p = Project(name=slug, slug=slug, namespace="u:%d" % owner.id, owner_user_id=owner.id,
                cluster_id=cluster.id if cluster is not None else None)
    s.add(p)
    s.flush()
    return p


def request(project: Project, launcher: User, files: Path, spark: bool = True) -> EngineRequest:
    return EngineRequest(kind="job", name="job-run-1", project=project, launcher=launcher,
                         command=["python3", "x.py"], files_dir=files, spark=spark)


def test_upgrade_puts_existing_projects_on_the_default_cluster(tmp_path: Path) -> None:
    db = Database("sqlite:///" + str(tmp_path / "old.db"))
    db.upgrade("0010")
    with db.engine.begin() as c:
        c.execute(text("INSERT INTO users (username, email, full_name, auth_source, is_admin, "
                       "is_active, failed_logins, created_at) VALUES ('bob', '', '', 'local', "
                       "0, 1, 0, '2026-01-01')"))
        c.execute(text("INSERT INTO projects (name, slug, description, owner_user_id, namespace, "
                       "visibility, created_at, updated_at) VALUES ('Churn', 'churn', 'kept', 1, "
                       "'u:1', 'private', '2026-01-01', '2026-01-01')"))
    db.upgrade()
    with db.session() as s:
        project = s.get(Project, 1)
        assert project.description == "kept"
        home = clusters.cluster_of(s, project)
        assert (home.name, home.is_default, home.requires_grant) == ("default", True, False)
        assert project.cluster_id == home.id
        assert clusters.placement(s, home) == []  # alone: nothing constrained, as before
    db.engine.dispose()


def test_register_validates_and_default_cannot_be_removed(world) -> None:  # type: ignore[no-untyped-def]
    _, db = world
    with db.session() as s:
        with pytest.raises(UserError, match="cluster name"):
            clusters.register(s, "1bad")
        with pytest.raises(UserError, match="kind"):
            clusters.register(s, "DEV", kind="default")
        with pytest.raises(UserError, match="absolute"):
            clusters.register(s, "DEV", krb5_conf="etc/krb5.conf")
        clusters.register(s, "DEV")
        with pytest.raises(UserError, match="already exists"):
            clusters.register(s, "DEV")
        with pytest.raises(UserError, match="cannot be removed"):
            clusters.remove(s, clusters.default_cluster(s))
        assert [c.name for c in clusters.all_clusters(s)] == ["default", "DEV"]


def test_grants_to_users_and_teams(world) -> None:  # type: ignore[no-untyped-def]
    _, db = world
    with db.session() as s:
        alice, bob, carol = (User(username=n, password_hash="x") for n in ("alice", "bob", "carol"))
        root = User(username="root", password_hash="x", is_admin=True)
        team = Team(name="ops")
        s.add_all([alice, bob, carol, root, team])
        s.flush()
        s.add(TeamMember(team_id=team.id, user_id=carol.id, role="member"))
        prod = clusters.register(s, "PROD", kind="prod")
        default = clusters.default_cluster(s)
        assert clusters.has_grant(s, bob, default)  # the default cluster is open to all
        assert not clusters.has_grant(s, bob, prod)
        assert clusters.has_grant(s, root, prod)  # site administrators may run anywhere
        clusters.grant(s, prod, user=alice)
        clusters.grant(s, prod, team=team)
        assert clusters.has_grant(s, alice, prod) and clusters.has_grant(s, carol, prod)
        assert not clusters.has_grant(s, bob, prod)
        assert [g for _, g in clusters.grantees(s, prod)] == ["user alice", "team ops"]
        assert clusters.revoke(s, prod, user=alice)
        assert not clusters.has_grant(s, alice, prod)


def test_placement_constraints_follow_the_swarm_rule(world) -> None:  # type: ignore[no-untyped-def]
    _, db = world
    with db.session() as s:
        clusters.register(s, "DEV")
        clusters.register(s, "PROD", kind="prod")
        default = clusters.default_cluster(s)
        prod = clusters.by_name(s, "PROD")
        assert clusters.placement(s, prod) == [("cdsw.cluster", "==", "PROD")]
        assert clusters.placement(s, default) == [("cdsw.cluster", "!=", "DEV"),
                                                  ("cdsw.cluster", "!=", "PROD")]
        matching = lambda c: [n.name for n in NODES  # noqa: E731
                              if clusters.node_matches(n.labels, clusters.placement(s, c))]
        assert matching(prod) == ["prod1", "prod22"]
        assert matching(clusters.by_name(s, "DEV")) == ["dev1"]
        assert matching(default) == ["master"]  # unlabelled nodes stay the default cluster's


def test_engines_run_on_their_clusters_nodes_with_its_configuration(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, db = world
    dev_conf, prod_conf = tmp_path / "dev-conf", tmp_path / "prod-conf"
    for conf, realm in ((dev_conf, "DEV.EXAMPLE"), (prod_conf, "PROD.EXAMPLE")):
        conf.mkdir()
        (conf / "core-site.xml").write_text("<configuration><property><name>realm</name>"
                                            "<value>%s</value></property></configuration>" % realm)
    (tmp_path / "krb5-prod.conf").write_text("[libdefaults]\n default_realm = PROD.EXAMPLE\n")
    with db.session() as s:
        alice = User(username="alice", password_hash="x")
        s.add_all([alice, EngineImage(repository="cdsw/engine", tag="abc", is_default=True)])
        s.flush()
        dev = clusters.register(s, "DEV", requires_grant=False)
        prod = clusters.register(s, "PROD", kind="prod",
                                 krb5_conf=str(tmp_path / "krb5-prod.conf"))
        dev_bundle = collect([dev_conf], clusters.bundles_root(settings, dev))
        prod_bundle = collect([prod_conf], clusters.bundles_root(settings, prod))
        assert dev_bundle.version != prod_bundle.version
        on_dev = add_project(s, alice, "churn-dev", dev)
        on_prod = add_project(s, alice, "churn-prod", prod)

        spec = build_spec(s, settings, FixedNodes(NODES), request(on_dev, alice, tmp_path))
        assert spec.node == "dev1" and spec.node_constraints == [("cdsw.cluster", "==", "DEV")]
        assert spec.labels[BUNDLE_LABEL] == dev_bundle.version

        with pytest.raises(EngineError, match="alice has no grant to run work on cluster PROD"):
            build_spec(s, settings, FixedNodes(NODES), request(on_prod, alice, tmp_path))
        clusters.grant(s, prod, user=alice)
        spec = build_spec(s, settings, FixedNodes(NODES), request(on_prod, alice, tmp_path))
        assert spec.node in ("prod1", "prod22")
        assert spec.labels[BUNDLE_LABEL] == prod_bundle.version
        krb5 = [m for m in spec.mounts if m.target == "/etc/krb5.conf"]
        assert krb5 and krb5[0].source == str(tmp_path / "krb5-prod.conf")

        # without a Spark driver too: placed on one of its cluster's nodes, constraint kept
        spec = build_spec(s, settings, FixedNodes(NODES),
                          request(on_prod, alice, tmp_path, spark=False))
        assert spec.node in ("prod1", "prod22")
        assert spec.node_constraints == [("cdsw.cluster", "==", "PROD")]

        # no PROD node up: refused with what to do, instead of a task pending for ever
        with pytest.raises(EngineError, match="no ready node of cluster PROD"):
            build_spec(s, settings, FixedNodes(NODES[:2]), request(on_prod, alice, tmp_path))


def test_swarm_maps_node_constraints_and_reads_node_labels() -> None:
    swarm = SwarmOrchestrator.__new__(SwarmOrchestrator)
    swarm.default_network, swarm._own_networks = None, False  # no Docker here: the bridge
    spec = WorkloadSpec(name="job-run-1", image="img", command=["true"], node="prod1",
                        node_constraints=[("cdsw.cluster", "==", "PROD")])
    task = swarm._service_kwargs(spec)["task_template"]
    assert task["Placement"]["Constraints"] == ["node.hostname==prod1",
                                                "node.labels.cdsw.cluster==PROD"]
    bad = WorkloadSpec(name="x", image="img", command=["true"],
                       node_constraints=[("cdsw.cluster", "=~", "PROD")])
    with pytest.raises(Exception, match="bad node constraint"):
        bad.validate()
