"""The pure parts of `cdsw hosts`: settings rendering, ssh command lines, the host key policy,
the remote scripts and the systemd units (cdsw_agent/hosts)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from cdsw_agent.errors import UserError
from cdsw_agent.hosts import install, nodes, ssh
from cdsw_agent.settings import load_settings
from cdsw_agent.settings.loader import parse_properties

SECRET = "s3cr3t-" + "x" * 20


def settings(tmp_path: Path, **env: str):  # type: ignore[no-untyped-def]
    (tmp_path / "empty").write_text("")
    base = {"CDSW_CONF": str(tmp_path / "empty"), "CDSW_PROPERTIES": str(tmp_path / "empty"),
            "CDSW_MASTER_HOST": "10.0.0.5", "CDSW_HTTP_PORT": "8443"}
    return load_settings(environ=dict(base, **env))


def test_worker_properties_round_trip(tmp_path: Path) -> None:
    s = settings(tmp_path, CDSW_DOCKER_REGISTRIES="a:5000,b:5000")
    extra = install.parse_assignments(["docker_data_root=/data/docker", "cdsw.log.level=debug"])
    text = install.worker_properties(s, SECRET, "PROD", extra)
    path = tmp_path / "w.properties"
    path.write_text(text)
    loaded = load_settings(environ={"CDSW_CONF": str(tmp_path / "empty"),
                                    "CDSW_PROPERTIES": str(path)})
    assert loaded.master_host == "10.0.0.5" and loaded.http_port == 8443
    assert loaded.cluster_secret == SECRET and loaded.workbench_cluster == "PROD"
    assert loaded.docker_data_root == "/data/docker" and loaded.log_level == "debug"
    assert loaded.docker_registries == ["a:5000", "b:5000"]
    assert {k for k, _, _ in parse_properties(path)} >= {"cdsw.master.host", "cdsw.cluster.secret"}


def test_worker_properties_refuse_a_loopback_master_and_no_secret(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="master_host is 127.0.0.1"):
        install.worker_properties(settings(tmp_path, CDSW_MASTER_HOST="127.0.0.1"), SECRET, "")
    with pytest.raises(UserError, match="secret is empty"):
        install.worker_properties(settings(tmp_path), "", "")


@pytest.mark.parametrize("pair, message", [
    ("nope=1", "setting name"), ("http_port=eighty", "expected an integer"),
    ("cluster_secret=x", "comes from the master"), ("docker_data_root", "NAME=VALUE")])
def test_bad_assignments_are_refused(pair: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        install.parse_assignments([pair])


def test_ssh_argv_checks_host_keys_strictly_and_never_prompts() -> None:
    t = ssh.Target("gw1", user="admin", port=2200, identity="/k", known_hosts="/kh")
    argv = ssh.ssh_argv(t, ssh.shell_command(t))
    joined = " ".join(argv)
    assert "StrictHostKeyChecking=yes" in joined and "BatchMode=yes" in joined
    assert "UserKnownHostsFile=/kh" in joined and "GlobalKnownHostsFile=/dev/null" in joined
    assert "accept-new" not in joined and "StrictHostKeyChecking=no" not in joined
    assert argv[-3:] == ["--", "gw1", "sudo -n sh -s"]  # the script goes on stdin
    assert ["-p", "2200"] == argv[1:3] and "-i" in argv
    assert ssh.shell_command(ssh.Target("gw1")) == "sh -s"
    assert t.key_name == "[gw1]:2200" and ssh.Target("gw1").key_name == "gw1"


def _key(tmp_path: Path, name: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)],
                   check=True)
    return (tmp_path / (name + ".pub")).read_text().split()


def test_host_key_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kind, blob = _key(tmp_path, "hk")[:2]
    kh = tmp_path / "known_hosts"
    t = ssh.Target("10.1.2.3", port=2022, known_hosts=str(kh))
    scanned = ["[10.1.2.3]:2022 %s %s" % (kind, blob)]
    monkeypatch.setattr(ssh, "scan_host_keys", lambda target: scanned)
    fp = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "hk.pub")], capture_output=True,
                        text=True).stdout.split()[1]
    # unknown and not accepted: refused, naming the key offered and how to accept, nothing recorded
    with pytest.raises(UserError, match="--accept-new-host-key") as refused:
        ssh.check_key_known(t, accept_new=False)
    assert fp in str(refused.value)
    assert not kh.exists()
    # accepted explicitly: the fingerprint is printed and the key recorded
    said = []
    ssh.check_key_known(t, accept_new=True, echo=said.append)
    assert len(said) == 1 and fp in said[0]
    assert ssh.is_known(t) and blob in kh.read_text()
    # known now: a second run records nothing more
    ssh.check_key_known(t, accept_new=True, echo=said.append)
    assert len(said) == 1 and kh.read_text().count(blob) == 1
    # another port of the same host is another key name: unknown
    assert not ssh.is_known(ssh.Target("10.1.2.3", port=22, known_hosts=str(kh)))


def test_ssh_failures_say_what_to_fix(tmp_path: Path) -> None:
    t = ssh.Target("gw1", known_hosts=str(tmp_path / "kh"))
    assert "--accept-new-host-key" in ssh.ssh_failure(t, "Host key verification failed.")
    assert "authorized_keys" in ssh.ssh_failure(t, "root@gw1: Permission denied (publickey).")


def test_probe_facts_and_problems() -> None:
    plan = install.Plan()
    ok = install.parse_facts("uid=0\nhostname=gw1\npython=3.11\nvenv=yes\ndockerd=/usr/bin/dockerd\n"
                             "systemd=yes\ninstalled=\nrunning_docker=no\nrunning_worker=no\n")
    assert install.problems(plan, ok, {"3.11"}) == []
    assert install.service_mode(plan, ok) == "systemd"
    bad = dict(ok, uid="1000", python="3.6", dockerd="")
    found = install.problems(plan, bad, {"3.11"})
    assert len(found) == 3 and "root" in found[0] and "3.6" in found[1] and "dockerd" in found[2]
    assert "no wheels for Python 3.12" in install.problems(plan, dict(ok, python="3.12"),
                                                           {"3.10", "3.11"})[0]
    assert "python3-venv" in install.problems(plan, dict(ok, venv="no"), {"3.11"})[0]
    nosd = dict(ok, systemd="no")
    with pytest.raises(UserError, match="--services background"):
        install.service_mode(plan, nosd)
    assert install.service_mode(install.Plan(services="background"), nosd) == "background"
    assert "systemd does not run" in install.problems(install.Plan(services="systemd"), nosd,
                                                      set())[0]


def test_probe_runs_and_looks_for_the_configured_dockerd(tmp_path: Path) -> None:
    plan = install.Plan(prefix=str(tmp_path / "pfx"), unit_dir=str(tmp_path / "u"),
                        dockerd="/nonexistent/dockerd")
    r = subprocess.run(["sh", "-s"], input=install.probe_script(plan), capture_output=True,
                       text=True, timeout=60)
    facts = install.parse_facts(r.stdout)
    assert r.returncode == 0 and facts["dockerd"] == "" and facts["installed"] == ""
    assert facts["running_docker"] == "no" and facts["python"]
    assert "/nonexistent/dockerd is not installed" in " ".join(install.problems(plan, facts, set()))


def test_wheelhouse_names() -> None:
    names = ["cdsw_agent-0.1.0.318-py3-none-any.whl",
             "cffi-2.1.1-cp311-cp311-manylinux2014_x86_64.whl",
             "orjson-3.1-cp310-cp310-manylinux2014_x86_64.whl", "click-8.5.1-py3-none-any.whl"]
    assert install.wheel_version(names) == "0.1.0.318"
    assert install.wheelhouse_pythons(names) == {"3.10", "3.11"}
    with pytest.raises(UserError, match="exactly one cdsw_agent"):
        install.wheel_version(names[1:])


def test_systemd_units() -> None:
    plan = install.Plan(prefix="/opt/cdsw")
    docker = install.systemd_unit(plan, "docker")
    worker = install.systemd_unit(plan, "worker")
    assert "ExecStart=/opt/cdsw/current/bin/cdsw role docker start" in docker
    assert "Environment=CDSW_PROPERTIES=/opt/cdsw/etc/cdsw.properties" in docker
    assert "Requires=cdsw-docker.service" in worker and "After=network-online.target " \
        "cdsw-docker.service" in worker
    assert "Restart=on-failure" in worker and "WantedBy=multi-user.target" in worker
    assert "secret" not in docker.lower() + worker.lower()


def test_scripts_keep_the_secret_off_command_lines(tmp_path: Path) -> None:
    plan = install.Plan(prefix=str(tmp_path / "pfx"), unit_dir=str(tmp_path / "units"))
    props = install.worker_properties(settings(tmp_path), SECRET, "PROD")
    script = install.configure_and_start_script(plan, "systemd", props)
    # the secret is only inside a quoted here-document read by cat, written 0600
    before, _, rest = script.partition("<<'CDSW_EOF_")
    assert SECRET not in before and SECRET in rest
    assert "umask 077" in before and "chmod 600" in rest
    # run the here-document part for real: the file appears with mode 0600 and that content
    (tmp_path / "pfx" / "etc").mkdir(parents=True)
    write = install._heredoc(plan.properties, props, "600")
    r = subprocess.run(["sh", "-s"], input="set -eu\nchanged=0\n" + write + "echo changed=$changed\n",
                       capture_output=True, text=True)
    assert r.returncode == 0 and "changed=1" in r.stdout, r.stderr
    assert Path(plan.properties).read_text() == props
    assert Path(plan.properties).stat().st_mode & 0o777 == 0o600
    r = subprocess.run(["sh", "-s"], input="set -eu\nchanged=0\n" + write + "echo changed=$changed\n",
                       capture_output=True, text=True)
    assert "changed=0" in r.stdout  # unchanged settings: roles are left running


def test_background_services_start_and_stop(tmp_path: Path) -> None:
    """The fallback's start and stop, with a stand-in `cdsw` that sleeps."""
    plan = install.Plan(prefix=str(tmp_path / "pfx"), unit_dir=str(tmp_path / "units"))
    fake = Path(plan.current) / "bin" / "cdsw"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\necho \"$@ $CDSW_PROPERTIES\"\nexec sleep 300\n")
    fake.chmod(0o755)
    props = install.worker_properties(settings(tmp_path), SECRET, "")
    start = install.configure_and_start_script(plan, "background", props)
    r = subprocess.run(["sh", "-s"], input=start, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    pids = {role: int((Path(plan.prefix) / "run" / ("%s.pid" % role)).read_text())
            for role in install.ROLES}
    for role, pid in pids.items():
        assert Path("/proc/%d" % pid).exists()
        assert SECRET.encode() not in Path("/proc/%d/cmdline" % pid).read_bytes()
    assert "role worker start %s" % plan.properties in \
        (Path(plan.prefix) / "log" / "worker.log").read_text()
    # running and unchanged: a second start keeps the same processes
    r = subprocess.run(["sh", "-s"], input=start, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert int((Path(plan.prefix) / "run" / "worker.pid").read_text()) == pids["worker"]
    r = subprocess.run(["sh", "-s"], input=install.stop_script(plan), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for pid in pids.values():
        try:
            state = Path("/proc/%d/stat" % pid).read_text().split()[2]
        except OSError:
            state = "gone"
        assert state in ("gone", "Z")
    assert not Path(plan.properties).exists()


def test_describe_node() -> None:
    node = {"ID": "abc", "Description": {"Hostname": "gw1"},
            "Spec": {"Role": "worker", "Availability": "active",
                     "Labels": {"cdsw.cluster": "PROD"}},
            "Status": {"State": "ready", "Addr": "10.0.0.7"}}
    row = nodes.describe(node, {"last_seen": "2026-12-07T22:00:00+00:00"})
    assert row == {"hostname": "gw1", "id": "abc", "role": "worker", "cluster": "PROD",
                   "state": "ready", "availability": "active", "address": "10.0.0.7",
                   "last_heartbeat": "2026-12-07T22:00:00+00:00"}
    assert nodes.describe(dict(node, Spec={"Role": "manager"}))["cluster"] == "default"


def test_plan_is_checked() -> None:
    for bad in (install.Plan(prefix="opt"), install.Plan(prefix="/"),
                install.Plan(prefix="/opt/x y"), install.Plan(services="cron")):
        with pytest.raises(UserError):
            install.check_plan(bad)
    install.check_plan(install.Plan())


def test_systemd_start_with_a_recording_systemctl(tmp_path: Path) -> None:
    """The systemd branch against a stand-in systemctl that records its calls: units written,
    enabled and started; unchanged on a second run (start, no restart); restarted when the
    settings change."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "systemctl").write_text("#!/bin/sh\necho \"$*\" >> %s\nexit 0\n" % calls)
    (bin_dir / "systemctl").chmod(0o755)
    plan = install.Plan(prefix=str(tmp_path / "pfx"), unit_dir=str(tmp_path / "units"))
    (tmp_path / "units").mkdir()
    env = {"PATH": "%s:/usr/bin:/bin" % bin_dir}

    def run(props: str) -> list:
        calls.write_text("")
        script = install.configure_and_start_script(plan, "systemd", props).replace(
            "sleep 2", ":")
        r = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, env=env,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        return calls.read_text().splitlines()

    props = install.worker_properties(settings(tmp_path), SECRET, "PROD")
    first = run(props)
    assert "enable cdsw-docker.service cdsw-worker.service" in first
    assert "restart cdsw-docker.service cdsw-worker.service" in first  # new files
    assert (tmp_path / "units" / "cdsw-worker.service").read_text() == \
        install.systemd_unit(plan, "worker")
    assert "start cdsw-docker.service cdsw-worker.service" in run(props)  # nothing changed
    changed = install.worker_properties(settings(tmp_path), SECRET, "DEV")
    assert "restart cdsw-docker.service cdsw-worker.service" in run(changed)


def test_parcel_launcher_exports_its_wheelhouse(tmp_path: Path) -> None:
    """On a parcel's master, `cdsw hosts add` finds the parcel's wheelhouse (CDSW_WHEELHOUSE,
    exported by parcel/bin/cdsw.in) unless one is given."""
    import sys

    pyv = "%d.%d" % sys.version_info[:2]
    template = (Path(__file__).resolve().parents[2] / "parcel" / "bin" / "cdsw.in").read_text()
    payload = tmp_path / "CDSW"
    (payload / "bin").mkdir(parents=True)
    (payload / "lib" / "cdsw" / "wheels").mkdir(parents=True)
    launcher = payload / "bin" / "cdsw"
    launcher.write_text(template.replace("@CDSW_VERSION@", "9.9").replace("@PYTHONS_SPACED@", "")
                        .replace("@PYTHONS@", pyv))
    launcher.chmod(0o755)
    venv = tmp_path / "venvs" / ("venv-9.9-py%s" % pyv)  # a finished venv whose cdsw tells
    (venv / "bin").mkdir(parents=True)
    (venv / ".cdsw-complete").write_text("9.9\n")
    (venv / "bin" / "cdsw").write_text("#!/bin/sh\necho \"$CDSW_WHEELHOUSE\"\n")
    (venv / "bin" / "cdsw").chmod(0o755)
    env = {"PATH": "%s:/usr/bin:/bin" % Path(sys.executable).parent,
           "CDSW_VENV_ROOT": str(tmp_path / "venvs"), "CDSW_PYTHON": sys.executable}
    r = subprocess.run([str(launcher)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(payload / "lib" / "cdsw" / "wheels")
    r = subprocess.run([str(launcher)], capture_output=True, text=True,
                       env=dict(env, CDSW_WHEELHOUSE="/elsewhere"))
    assert r.stdout.strip() == "/elsewhere"


class FakeApi:
    def __init__(self, nodes_: list):
        self._nodes = nodes_
        self.updated: list = []

    def nodes(self) -> list:
        return self._nodes

    def update_node(self, node_id: str, version: int, spec: dict) -> None:
        self.updated.append((node_id, spec["Availability"]))


class FakeClient:
    def __init__(self, nodes_: list, managers: tuple = ("10.0.0.1:2377",)):
        self.api = FakeApi(nodes_)
        self.managers = managers

    def info(self) -> dict:
        return {"Swarm": {"LocalNodeState": "active",
                          "RemoteManagers": [{"Addr": a} for a in self.managers]}}


def _node(host: str, role: str = "worker", state: str = "ready", label: str = "",
          availability: str = "active") -> dict:
    return {"ID": host + "-id", "Description": {"Hostname": host},
            "Spec": {"Role": role, "Availability": availability,
                     "Labels": {"cdsw.cluster": label} if label else {}},
            "Status": {"State": state, "Addr": "10.1.0.%d" % (len(host) + 1)},
            "Version": {"Index": 1}}


def test_joined_needs_ready_active_and_the_label() -> None:
    client = FakeClient([_node("h1", role="manager"), _node("gw", label="PROD")])
    assert nodes.joined(client, "gw", "PROD")["ID"] == "gw-id"
    assert nodes.joined(client, "gw", "DEV") is None and nodes.joined(client, "gw", "") is None
    assert nodes.joined(FakeClient([_node("gw", state="down", label="PROD")]), "gw", "PROD") is None
    assert nodes.joined(FakeClient([_node("gw", availability="drain", label="PROD")]), "gw",
                        "PROD") is None
    # a stale down node of the same name beside the new ready one
    both = FakeClient([_node("gw", state="down"), _node("gw", label="PROD")])
    assert nodes.joined(both, "gw", "PROD") is not None
    nodes.refuse_manager(client, "gw")
    with pytest.raises(UserError, match="swarm manager"):
        nodes.refuse_manager(client, "h1")
    with pytest.raises(UserError, match="did not join"):
        nodes.wait_joined(client, "gw", "DEV", timeout=0, echo=lambda line: None, interval=0)


def test_a_swarm_that_advertises_a_loopback_address_is_refused() -> None:
    nodes.refuse_loopback_swarm(FakeClient([]), "unix:///d.sock")
    for addr in ("127.0.0.1:2377", "[::1]:2377"):
        with pytest.raises(UserError, match="advertises %s.*swarm leave --force" % re.escape(addr)):
            nodes.refuse_loopback_swarm(FakeClient([], managers=(addr,)), "unix:///d.sock")


def test_an_unreachable_host_is_found_by_name_or_address_and_drained() -> None:
    client = FakeClient([_node("h1", role="manager"), _node("gw7", label="PROD"), _node("other")])
    assert nodes.drain_unreachable(client, "gw7") == ["gw7-id"]
    assert client.api.updated == [("gw7-id", "drain")]
    assert nodes.drain_unreachable(client, "10.1.0.4") == ["gw7-id"]  # its address
    with pytest.raises(UserError, match="no swarm node is named nowhere"):
        nodes.drain_unreachable(client, "nowhere")
    with pytest.raises(UserError, match="swarm manager"):
        nodes.drain_unreachable(client, "h1")


def test_the_cluster_secret_is_read_never_made(tmp_path: Path) -> None:
    from cdsw_agent.cli.hosts import _cluster_secret

    data = tmp_path / "data"
    data.mkdir()
    s = settings(tmp_path, CDSW_DATA_DIR=str(data))
    with pytest.raises(UserError, match="no cluster secret in .*run this on the master"):
        _cluster_secret(s)
    assert not (data / "cluster-secret").exists()  # a new one would not be the master's
    (data / "cluster-secret").write_text("the-masters\n")
    assert _cluster_secret(s) == "the-masters"
    assert _cluster_secret(settings(tmp_path, CDSW_CLUSTER_SECRET="set")) == "set"
