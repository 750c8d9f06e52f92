"""The one engine builder every kind of work uses (cdsw_agent/workloads/engine.py)."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from cdsw_agent.clientconfig import BUNDLE_LABEL, bundles_dir, collect
from cdsw_agent.orchestrators.base import Node, Orchestrator
from cdsw_agent.settings import Settings
from cdsw_agent.store.db import Database
from cdsw_agent.store.envvars import SITE, project_scope
from cdsw_agent.store.models import EngineImage, EngineProfile, EnvVar, Project, User
from cdsw_agent.workloads import EngineError, EngineRequest, build_spec, place

from ..conftest import make_settings


class FixedNodes(Orchestrator):
    """Only nodes() matters to the builder; the rest must never be called."""

    name = "swarm"

    def __init__(self, nodes: List[Node]):
        self._nodes = nodes

    def nodes(self) -> List[Node]:
        return self._nodes

    def launch(self, spec):  # type: ignore[no-untyped-def]
        raise AssertionError("the builder must not launch")

    stop = status = logs = list = remove = launch  # type: ignore[assignment]


def node(name: str, address: str, cpu_free: float, mem_free_gib: float,
         state: str = "ready") -> Node:
    return Node(name=name, address=address, state=state, cpu_capacity=4.0,
                memory_capacity=16 * 2**30, cpu_allocated=4.0 - cpu_free,
                memory_allocated=int((16 - mem_free_gib) * 2**30), id=name)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Tuple[Settings, Database, int, int, int]]:
    settings = make_settings(tmp_path / "data", domain="cdsw.example.com",
                             master_host="10.1.2.3", http_proxy="http://proxy:3128")
    db = Database(settings.database_url)
    db.upgrade()
    with db.session() as s:
        alice = User(username="alice", password_hash="x", email="a@example.com")
        bob = User(username="bob", password_hash="x", email="b@example.com")
        s.add_all([alice, bob])
        s.flush()
        project = Project(name="Churn", slug="churn", namespace="u:%d" % bob.id,
                          owner_user_id=bob.id)
        s.add(project)
        s.add(EngineImage(repository="cdsw/engine", tag="abc", is_default=True))
        profile = EngineProfile(name="big", cpu=2.0, memory_gb=4.0, gpus=0)
        s.add(profile)
        s.flush()
        s.add_all([EnvVar(scope=SITE, name="SITE_ONLY", value="s"),
                   EnvVar(scope=SITE, name="SHARED", value="site"),
                   EnvVar(scope=project_scope(project.id), name="SHARED", value="project"),
                   EnvVar(scope=project_scope(project.id), name="HADOOP_USER_NAME",
                          value="bob-the-owner")])
        ids = (alice.id, project.id, profile.id)
    yield settings, db, ids[0], ids[1], ids[2]
    db.engine.dispose()


def request(s, alice_id: int, project_id: int, files: Path, **kw) -> EngineRequest:  # type: ignore[no-untyped-def]
    return EngineRequest(kind="session", name="session-7", project=s.get(Project, project_id),
                         launcher=s.get(User, alice_id), command=["python3", "-V"],
                         files_dir=files, **kw)


def test_identity_environment_and_resources(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, db, alice, project, profile = world
    with db.session() as s:
        spec = build_spec(s, settings, FixedNodes([]), request(
            s, alice, project, tmp_path, profile_id=profile,
            env={"SHARED": "request", "CDSW_DOMAIN": "evil.example.com"}))
    env = spec.env
    # the launcher, never the project owner, even when a project variable says otherwise
    assert env["HADOOP_USER_NAME"] == "alice" and env["CDSW_USER"] == "alice"
    assert env["CDSW_DOMAIN"] == "cdsw.example.com"  # CDSW's own variables cannot be overridden
    assert env["CDSW_MASTER_IP"] == "10.1.2.3" and env["CDSW_ENGINE_ID"] == "session-7"
    assert env["CDSW_PROJECT"] == "churn" and env["CDSW_PROJECT_ID"] == str(project)
    assert env["SITE_ONLY"] == "s" and env["SHARED"] == "request"  # site < project < request
    assert env["HTTP_PROXY"] == "http://proxy:3128" and "HTTPS_PROXY" not in env
    assert spec.image == "cdsw/engine:abc"  # the site default
    assert (spec.cpu_reservation, spec.cpu_limit) == (2.0, 2.0)
    assert spec.memory_limit == spec.memory_reservation == 4 * 2**30
    # the project is the working directory; $HOME is alice's own folder, outside the project
    home = Path(settings.projects_dir) / ".homes" / str(alice)
    assert [(m.source, m.target) for m in spec.mounts] == [(str(tmp_path), "/home/cdsw"),
                                                           (str(home), "/home/cdsw-user")]
    assert spec.workdir == "/home/cdsw" and home.is_dir()
    assert home.stat().st_mode & 0o777 == 0o700
    assert env["HOME"] == "/home/cdsw-user" and env["IPYTHONDIR"] == "/home/cdsw-user/.ipython"
    assert env["JUPYTER_CONFIG_DIR"] == "/home/cdsw-user/.jupyter"
    assert env["PYTHONUSERBASE"] == "/home/cdsw-user/.local"
    assert env["XDG_CONFIG_HOME"] == "/home/cdsw-user/.config"
    assert spec.labels["io.cdsw.kind"] == "session" and spec.labels["io.cdsw.user"] == str(alice)
    assert spec.node is None  # no client configuration: the orchestrator places the engine


def test_project_variables_cannot_point_startup_files_into_the_project(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, db, alice, project, _ = world
    with db.session() as s:
        spec = build_spec(s, settings, FixedNodes([]), request(
            s, alice, project, tmp_path, env={"HOME": "/home/cdsw", "IPYTHONDIR": "/home/cdsw",
                                              "JUPYTER_PATH": "/home/cdsw/j"}))
    assert spec.env["HOME"] == "/home/cdsw-user" and spec.env["IPYTHONDIR"].startswith(
        "/home/cdsw-user/")
    assert spec.env["JUPYTER_PATH"] == ""


def test_no_image_is_a_clear_error_on_swarm(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, db, alice, project, _ = world
    with db.session() as s:
        for image in s.query(EngineImage):
            image.is_default = False
    with db.session() as s, pytest.raises(EngineError, match="no engine image"):
        build_spec(s, settings, FixedNodes([]), request(s, alice, project, tmp_path))
    with db.session() as s, pytest.raises(EngineError, match="profile 99 does not exist"):
        build_spec(s, settings, FixedNodes([]), request(s, alice, project, tmp_path, profile_id=99))


def test_client_configuration_places_the_engine_and_mounts_the_bundle(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, db, alice, project, profile = world
    conf = tmp_path / "hadoop-conf"
    conf.mkdir()
    (conf / "core-site.xml").write_text("<configuration/>\n")
    (conf / "yarn-site.xml").write_text("<configuration/>\n")
    bundle = collect([conf], bundles_dir(settings))
    nodes = [node("full", "10.0.0.1", cpu_free=1.0, mem_free_gib=15),  # too few CPUs free
             node("roomy", "10.0.0.2", cpu_free=3.0, mem_free_gib=8),
             node("tight", "10.0.0.3", cpu_free=3.0, mem_free_gib=5),
             node("down", "10.0.0.4", cpu_free=4.0, mem_free_gib=16, state="down")]
    with db.session() as s:
        spec = build_spec(s, settings, FixedNodes(nodes), request(
            s, alice, project, tmp_path, profile_id=profile))
    assert spec.node == "roomy"
    targets = {m.target: m for m in spec.mounts}
    assert targets["/home/cdsw"].read_only is False
    conf_mounts = [m for m in spec.mounts if m.target not in ("/home/cdsw", "/home/cdsw-user")]
    assert conf_mounts and all(m.read_only for m in conf_mounts)
    assert Path(targets[spec.env["HADOOP_CONF_DIR"]].source, "core-site.xml").is_file()
    spark = Path(targets[spec.env["SPARK_CONF_DIR"]].source, "spark-defaults.conf").read_text()
    assert "spark.driver.host=10.0.0.2" in spark.replace(" ", "=").replace("==", "=")
    published = sorted(p.container for p in spec.ports)
    assert len(published) == 2 and published[1] == published[0] + 1
    assert spec.labels[BUNDLE_LABEL] == bundle.version


def test_place_refuses_when_nothing_fits() -> None:
    orch = FixedNodes([node("a", "10.0.0.1", cpu_free=0.5, mem_free_gib=1)])
    with pytest.raises(EngineError, match="no node has 1.0 CPU"):
        place(orch, 1.0, 2**30)
    assert place(orch, 0.5, 2**30).name == "a"


def test_what_holds_room_for_later_gives_way_to_an_engine_that_finds_none() -> None:
    """place() asks every registered room maker (warm pools) to give way, then tries once more;
    a maker that frees nothing, or fails, leaves the refusal as it was."""
    from cdsw_agent.workloads import engine

    orch = FixedNodes([node("a", "10.0.0.1", cpu_free=0.5, mem_free_gib=8)])

    class Pool:
        def __init__(self, frees: float) -> None:
            self.frees, self.asked = frees, 0

        def give_way(self) -> bool:
            self.asked += 1
            if self.frees:
                orch._nodes[0] = node("a", "10.0.0.1", cpu_free=0.5 + self.frees, mem_free_gib=8)
            return bool(self.frees)

    class Broken:
        def give_way(self) -> bool:
            raise RuntimeError("docker went away")

    empty, broken = Pool(0.0), Broken()
    engine.holds_room(empty)
    engine.holds_room(broken)
    with pytest.raises(engine.NoRoom, match="no node has 1.0 CPU"):
        place(orch, 1.0, 2**30)
    assert empty.asked == 1
    warm = Pool(1.0)
    engine.holds_room(warm)
    assert place(orch, 1.0, 2**30).name == "a" and warm.asked == 1
    assert place(orch, 0.5, 2**30).name == "a" and warm.asked == 1  # room: nobody is asked
    for maker in (empty, broken, warm):
        engine._room_makers.discard(maker)
    gone = Pool(0.0)  # kept weakly: a pool that is gone is not asked
    engine.holds_room(gone)
    del gone
    gc.collect()
    assert not [m for m in engine._room_makers if isinstance(m, Pool)]
    engine._placed.clear()


def test_engines_placed_together_spread_over_the_nodes() -> None:
    """Two engines placed in the same instant (a model's replicas) go to different nodes even
    though the orchestrator does not show the first one's reservation yet."""
    from cdsw_agent.workloads import engine

    engine._placed.clear()
    orch = FixedNodes([node("w1", "10.0.0.1", cpu_free=2.0, mem_free_gib=8),
                       node("w2", "10.0.0.2", cpu_free=2.0, mem_free_gib=7)])
    first, second = place(orch, 1.5, 2**30), place(orch, 1.5, 2**30)
    assert (first.name, second.name) == ("w1", "w2")
    # the recent placements may be stale (engines removed since): they never refuse an engine
    # the orchestrator's numbers allow, they only rank the nodes, so placement keeps spreading
    assert [place(orch, 1.5, 2**30).name for _ in range(3)] == ["w1", "w2", "w1"]
    engine._placed.clear()


def test_an_engine_without_spark_gets_the_configuration_but_is_not_pinned(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, db, alice, project, profile = world
    conf = tmp_path / "hadoop-conf"
    conf.mkdir()
    (conf / "core-site.xml").write_text("<configuration/>\n")
    collect([conf], bundles_dir(settings))
    with db.session() as s:
        spec = build_spec(s, settings, FixedNodes([]), request(
            s, alice, project, tmp_path, profile_id=profile, spark=False))
    assert spec.node is None and spec.ports == [] and "SPARK_CONF_DIR" not in spec.env
    targets = {m.target: m for m in spec.mounts}
    assert Path(targets[spec.env["HADOOP_CONF_DIR"]].source, "core-site.xml").is_file()


def test_only_the_site_may_set_variables_that_load_code_at_start(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, db, alice, project, _ = world
    with db.session() as s:
        s.add_all([EnvVar(scope=project_scope(project), name="LD_PRELOAD", value="/home/cdsw/x.so"),
                   EnvVar(scope=project_scope(project), name="BASH_ENV", value="/home/cdsw/x"),
                   EnvVar(scope=SITE, name="LD_LIBRARY_PATH", value="/opt/site/lib")])
    with db.session() as s:
        spec = build_spec(s, settings, FixedNodes([]), request(
            s, alice, project, tmp_path, env={"PROMPT_COMMAND": "touch /home/cdsw/x",
                                              "LD_LIBRARY_PATH": "/home/cdsw/lib"}))
    for name in ("LD_PRELOAD", "BASH_ENV", "PROMPT_COMMAND"):
        assert name not in spec.env, name
    assert spec.env["LD_LIBRARY_PATH"] == "/opt/site/lib"  # the site's value stands
