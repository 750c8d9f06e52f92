"""The engine's git guard (cdsw_agent/engine/git_guard.py) against a collaborator's planted
repository settings and hooks, with the real git on this host and real repositories: each
attack is first shown to run through plain git, then not to run through the guard."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from cdsw_agent.engine import git_guard
from cdsw_agent.engine.git_guard import NO_HOOKS, TRUST_VARIABLE, command, is_safe, split_args

GIT = shutil.which("git") or "/usr/bin/git"
pytestmark = pytest.mark.skipif(not os.path.exists(git_guard.REAL_GIT),
                                reason="needs git at /usr/bin/git (apt-get install git)")


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The person's own home, as in an engine (HOME and the XDG folders under it)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv(TRUST_VARIABLE, raising=False)
    for name in ("GIT_EDITOR", "VISUAL", "EDITOR"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture()
def project(tmp_path: Path, home: Path) -> Path:
    """A shared project with a git repository (outside the person's home), one commit."""
    repo = tmp_path / "project"
    repo.mkdir()
    for args in (["init", "-q"], ["config", "user.name", "Alice"],
                 ["config", "user.email", "alice@example.com"],
                 ["remote", "add", "origin", "https://git.example.com/team/p.git"]):
        subprocess.run([GIT, "-C", str(repo)] + args, check=True)
    (repo / "a.txt").write_text("a\n")
    subprocess.run([GIT, "-C", str(repo), "add", "a.txt"], check=True)
    subprocess.run([GIT, "-C", str(repo), "commit", "-qm", "first"], check=True)
    return repo


def plant_setting(repo: Path, key: str, value: str) -> None:
    subprocess.run([GIT, "-C", str(repo), "config", key, value], check=True)


def plant_hook(repo: Path, name: str, body: str, mode: int = 0o755) -> Path:
    hook = repo / ".git" / "hooks" / name
    hook.write_text("#!/bin/sh\n" + body)
    hook.chmod(mode)
    return hook


def guarded(args: List[str], cwd: Path, extra: Optional[Dict[str, str]] = None
            ) -> subprocess.CompletedProcess:
    """`git ARGS` as the engine runs it: through the guard (its decision, then the real git)."""
    old = os.getcwd()
    os.chdir(cwd)
    saved = {k: os.environ.get(k) for k in (extra or {})}
    os.environ.update(extra or {})
    try:
        err = io.StringIO()
        run = command(args, stderr=err)
    finally:
        os.chdir(old)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if run is None:
        return subprocess.CompletedProcess(args, 1, "", err.getvalue())
    cmd, env = run
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    return subprocess.CompletedProcess(args, p.returncode, p.stdout, err.getvalue() + p.stderr)


def marker(repo: Path, name: str) -> str:
    return "touch %s; " % (repo.parent / ("hijacked-" + name))


def ran(repo: Path, name: str) -> bool:
    return (repo.parent / ("hijacked-" + name)).exists()


def test_a_clean_repository_runs_with_no_hook_and_no_monitor(project: Path) -> None:
    run = command(["status"])  # cwd: not the project
    out = guarded(["status", "--short"], project)
    assert out.returncode == 0 and out.stdout == "", out
    cmd, _ = command(["-C", str(project), "log", "--oneline"]) or ([], {})
    assert cmd[1:5] == ["-c", "core.hooksPath=" + NO_HOOKS, "-c", "core.fsmonitor=false"]
    assert run is not None


def test_a_planted_fsmonitor_runs_through_plain_git_but_not_through_the_guard(project: Path) -> None:
    plant_setting(project, "core.fsmonitor", marker(project, "fsmonitor") + "false")
    subprocess.run([GIT, "status"], cwd=project, capture_output=True)
    assert ran(project, "fsmonitor")  # the attack is real
    (project.parent / "hijacked-fsmonitor").unlink()

    out = guarded(["status"], project)
    assert out.returncode == 1 and not ran(project, "fsmonitor")
    assert "git did not run" in out.stderr and "core.fsmonitor = touch" in out.stderr, out.stderr
    assert "CDSW_GIT_TRUST=1" in out.stderr


@pytest.mark.parametrize("key,value,trigger", [
    ("core.pager", "{m}cat", ["-p", "log"]),
    ("core.sshCommand", "{m}ssh", ["status"]),
    ("diff.external", "{m}true", ["diff"]),
    ("credential.helper", "!{m}true", ["status"]),
    ("include.path", "/elsewhere/config", ["status"]),
    ("alias.st", "!{m}true", ["st"]),
    ("url.https://evil.example.com/.insteadOf", "https://git.example.com/", ["status"]),
    ("remote.origin.uploadpack", "{m}git-upload-pack", ["status"]),
])
def test_settings_that_run_or_redirect_are_refused(project: Path, key: str, value: str,
                                                   trigger: List[str]) -> None:
    plant_setting(project, key, value.format(m=marker(project, "setting")))
    out = guarded(trigger, project)
    assert out.returncode == 1 and not ran(project, "setting"), out
    assert key.lower() in out.stderr.lower(), out.stderr


def test_a_filter_driver_named_by_gitattributes_is_refused(project: Path) -> None:
    plant_setting(project, "filter.evil.clean", marker(project, "filter") + "cat")
    (project / ".gitattributes").write_text("*.txt filter=evil\n")
    (project / "a.txt").write_text("changed\n")
    subprocess.run([GIT, "add", "a.txt"], cwd=project, capture_output=True)
    assert ran(project, "filter")
    (project.parent / "hijacked-filter").unlink()
    out = guarded(["add", "a.txt"], project)
    assert out.returncode == 1 and not ran(project, "filter")
    assert "filter.evil.clean" in out.stderr


def test_a_planted_hook_is_refused_samples_and_non_executables_are_not_hooks(project: Path) -> None:
    plant_hook(project, "pre-commit.sample", marker(project, "sample"))
    plant_hook(project, "post-commit", marker(project, "plain-file"), mode=0o644)
    out = guarded(["commit", "--allow-empty", "-qm", "x"], project)
    assert out.returncode == 0, out
    plant_hook(project, "pre-commit", marker(project, "hook"))
    out = guarded(["commit", "--allow-empty", "-qm", "y"], project)
    assert out.returncode == 1 and "hook .git/hooks/pre-commit" in out.stderr, out.stderr
    assert not ran(project, "hook") and not ran(project, "sample")


def test_trusting_runs_this_state_only_until_anyone_changes_it(project: Path, home: Path) -> None:
    plant_setting(project, "core.fsmonitor", marker(project, "trusted") + "false")
    out = guarded(["status"], project, {TRUST_VARIABLE: "1"})
    assert out.returncode == 0 and ran(project, "trusted")  # the person's choice: it runs
    assert str(project / ".git") in (home / ".config/cdsw/git-trusted").read_text()
    (project.parent / "hijacked-trusted").unlink()
    assert guarded(["status"], project).returncode == 0 and ran(project, "trusted")

    plant_setting(project, "core.fsmonitor", marker(project, "changed") + "false")
    out = guarded(["status"], project)
    assert out.returncode == 1 and not ran(project, "changed")


def test_git_runs_the_checked_hooks_not_what_the_folder_holds_by_then(project: Path) -> None:
    plant_hook(project, "pre-commit", marker(project, "checked"))
    cmd_env = None
    os.environ[TRUST_VARIABLE] = "1"
    try:
        cmd_env = command(["-C", str(project), "commit", "--allow-empty", "-qm", "x"])
    finally:
        del os.environ[TRUST_VARIABLE]
    assert cmd_env is not None
    # between the check and git's start, a collaborator rewrites the hook and adds another
    plant_hook(project, "pre-commit", marker(project, "swapped"))
    plant_hook(project, "commit-msg", marker(project, "added"))
    p = subprocess.run(cmd_env[0], env=cmd_env[1], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert ran(project, "checked") and not ran(project, "swapped") and not ran(project, "added")


def test_a_hook_or_monitor_added_after_a_clean_check_does_not_run(project: Path) -> None:
    cmd, env = command(["-C", str(project), "commit", "--allow-empty", "-qm", "x"]) or ([], {})
    plant_hook(project, "pre-commit", marker(project, "late-hook"))
    plant_setting(project, "core.fsmonitor", marker(project, "late-monitor") + "false")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    cmd, env = command(["-C", str(project), "status"]) or ([], {})
    assert cmd == []  # the next check sees them
    assert not ran(project, "late-hook") and not ran(project, "late-monitor")


def test_git_config_always_runs_with_the_persons_own_editor(project: Path) -> None:
    plant_setting(project, "core.fsmonitor", marker(project, "fsmonitor") + "false")
    plant_setting(project, "core.editor", marker(project, "editor") + "true")
    out = guarded(["config", "--unset", "core.fsmonitor"], project)
    assert out.returncode == 0, out
    out = guarded(["config", "--edit"], project, {"EDITOR": "true"})
    assert out.returncode == 0 and not ran(project, "editor"), out
    assert "core.editor" in guarded(["status"], project).stderr
    guarded(["config", "--unset", "core.editor"], project)
    assert guarded(["status"], project).returncode == 0


def test_git_config_on_a_terminal_runs_no_planted_pager(project: Path) -> None:
    import pty

    plant_setting(project, "core.pager", marker(project, "pager") + "cat")

    def on_terminal(cmd: List[str], env: Optional[Dict[str, str]] = None) -> None:
        leader, follower = pty.openpty()
        try:
            subprocess.run(cmd, cwd=project, env=env, stdin=follower, stdout=follower,
                           stderr=follower, timeout=30)
        finally:
            os.close(leader)
            os.close(follower)
    on_terminal([GIT, "config", "--list"])
    assert ran(project, "pager")  # the attack is real: git pages `config --list` on a tty
    (project.parent / "hijacked-pager").unlink()
    cmd, env = command(["-C", str(project), "config", "--list"]) or ([], {})
    on_terminal(cmd, env)
    assert not ran(project, "pager")


def test_outside_a_repository_and_in_the_persons_home_git_runs_as_is(tmp_path: Path,
                                                                     home: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert command(["init", "-q", "x"], git=GIT) is not None
    old = os.getcwd()
    os.chdir(plain)
    try:
        assert command(["--version"]) == ([git_guard.REAL_GIT, "--version"], dict(os.environ))
    finally:
        os.chdir(old)
    own = home / "own"
    subprocess.run([GIT, "init", "-q", str(own)], check=True)
    plant_hook(own, "pre-commit", "exit 0\n")
    cmd, _ = command(["-C", str(own), "status"]) or ([], {})
    assert cmd == [git_guard.REAL_GIT, "-C", str(own), "status"]


def test_the_repository_is_the_one_git_would_use(project: Path, tmp_path: Path) -> None:
    plant_setting(project, "core.fsmonitor", marker(project, "fsmonitor") + "false")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert guarded(["-C", str(project), "status"], elsewhere).returncode == 1
    assert guarded(["--git-dir", str(project / ".git"), "--work-tree", str(project), "status"],
                   elsewhere).returncode == 1
    assert guarded(["-c", "color.ui=never", "-C", str(project), "status"],
                   elsewhere).returncode == 1
    assert not ran(project, "fsmonitor")


def test_a_submodules_settings_count(project: Path) -> None:
    module = project / ".git" / "modules" / "lib"
    module.mkdir(parents=True)
    (module / "config").write_text("[filter \"evil\"]\n\tsmudge = %scat\n"
                                   % marker(project, "sub"))
    out = guarded(["status"], project)
    assert out.returncode == 1 and "modules/lib/config: filter.evil.smudge" in out.stderr


def test_which_settings_are_data() -> None:
    for key, value in (("core.bare", "false"), ("remote.origin.url", "x"),
                       ("remote.my.name.fetch", "x"), ("branch.main.merge", "refs/heads/main"),
                       ("user.email", "a@b"), ("color.diff.meta", "blue"), ("core.fsmonitor", "true"),
                       ("core.fsmonitor", "false"), ("submodule.lib.url", "x"),
                       ("extensions.worktreeconfig", "true"), ("core.bare", None)):
        assert is_safe(key, value), key
    for key, value in (("core.fsmonitor", "/x/y"), ("core.hookspath", "hooks"),
                       ("core.pager", "less"), ("core.editor", "vi"), ("merge.x.driver", "y"),
                       ("diff.x.textconv", "y"), ("diff.external", "y"), ("gpg.program", "y"),
                       ("submodule.lib.update", "!sh"), ("protocol.ext.allow", "always"),
                       ("http.sslverify", "false"), ("core.askpass", "y"), ("sequence.editor", "y")):
        assert not is_safe(key, value), key


def test_the_options_before_the_subcommand() -> None:
    assert split_args(["-C", "d", "-c", "a=b", "--git-dir=g", "status", "-C", "x"]) == \
        (["-C", "d", "--git-dir=g"], "status")
    assert split_args(["--no-pager", "--work-tree", "w", "log"]) == (["--work-tree", "w"], "log")
    assert split_args(["--version"]) == ([], None)
