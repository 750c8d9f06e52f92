"""`git` in an engine: a repository's own commands run only as its user has trusted them.

A project is shared: any Contributor can write its `.git` folder (from a session's terminal, or
the files API). Git runs commands named there by itself: hooks (`.git/hooks/pre-commit`),
`core.fsmonitor` on every `git status`, filter, diff and merge drivers that `.gitattributes`
names, `core.pager`, `credential.helper`, `include.path` files and more. Without this guard,
a collaborator could plant one and have it run as whoever next runs git in the project, with
that person's Kerberos ticket and credentials.

The engine image's `/usr/local/bin/git` (ahead of /usr/bin on PATH) runs this module, which,
before running the real git:
- reads the repository's configuration files (and its submodules') with git itself, without
  following includes, and lists every setting outside SAFE (what git only reads as data:
  remotes, branches, user name, colours...) as something that would run or redirect;
- lists the executable hooks git would run (the effective hooks folder, not `*.sample`);
- if there are any, runs git only when the person has trusted exactly this state: the sha256 of
  those settings and hook contents is in their own `$XDG_CONFIG_HOME/cdsw/git-trusted` (their
  home is theirs alone: the launcher's folder, engines/workloads/engine.py). `CDSW_GIT_TRUST=1
  git ...` trusts the current state; any later change, by anyone, needs trusting again.
  Otherwise git does not run, and the message lists what would have run and how to proceed.
- pins what git runs to what was checked: hooks from a private copy of the checked ones (or
  none; submodules get the same pin), and `core.fsmonitor` to the value checked (or off), so
  a hook or monitor written between the check and git's start does not run.

A repository (or hooks folder) inside the person's own home is theirs and runs as is.

`git config` always runs (how a person removes what they do not want), with GIT_EDITOR taken
from their own environment rather than the repository's `core.editor`, and without a pager (on a
terminal `git config --list` would run the repository's `core.pager`). Outside a repository
git runs as is. What remains: a collaborator who rewrites the configuration with a new driver
in the instant between the check and git reading it (drivers cannot be pinned by name).
Standard library only (it runs on the engine image's Python).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REAL_GIT = "/usr/bin/git"
TRUST_VARIABLE = "CDSW_GIT_TRUST"
NO_HOOKS = "/dev/null/hooks"  # can never exist: git finds no hook there
# global options taking a separate argument (everything before the subcommand is global)
_GLOBAL_WITH_ARG = frozenset(("-C", "-c", "--git-dir", "--work-tree", "--namespace"))
_PATH_OPTIONS = frozenset(("-C", "--git-dir", "--work-tree"))  # decide which repository

# settings git only reads as data; a `*` stands for one subsection (a remote's or branch's name)
SAFE = frozenset("""
core.repositoryformatversion core.filemode core.bare core.logallrefupdates core.ignorecase
core.precomposeunicode core.symlinks core.autocrlf core.eol core.safecrlf core.quotepath
core.whitespace core.compression core.loosecompression core.bigfilethreshold
core.sparsecheckout core.sparsecheckoutcone core.commentchar core.abbrev core.checkstat
core.trustctime core.untrackedcache core.splitindex core.preloadindex core.longpaths
core.multipackindex core.commitgraph core.warnambiguousrefs
remote.*.url remote.*.pushurl remote.*.fetch remote.*.push remote.*.tagopt remote.*.prune
remote.*.prunetags remote.*.mirror remote.*.skipdefaultupdate remote.*.skipfetchall
remote.*.promisor remote.*.partialclonefilter
branch.*.remote branch.*.merge branch.*.rebase branch.*.pushremote branch.*.description
branch.autosetupmerge branch.autosetuprebase branch.sort
user.name user.email author.name author.email committer.name committer.email
init.defaultbranch pull.rebase pull.ff push.default push.autosetupremote push.followtags
fetch.prune fetch.prunetags merge.ff merge.conflictstyle rebase.autostash rebase.autosquash
rebase.updaterefs commit.verbose commit.cleanup tag.sort diff.renames diff.algorithm
diff.mnemonicprefix diff.noprefix diff.colormoved diff.submodule
submodule.*.url submodule.*.active submodule.*.branch submodule.*.shallow
submodule.*.fetchrecursesubmodules submodule.*.ignore submodule.recurse
maintenance.auto maintenance.strategy
""".split())
SAFE_SECTIONS = ("color.", "column.", "status.", "log.", "advice.", "gc.", "pack.", "index.",
                 "extensions.", "feature.")
FSMONITOR = "core.fsmonitor"  # true (git's own daemon) and false are data; a command is not


def is_safe(key: str, value: Optional[str]) -> bool:
    key = key.lower()
    if key == FSMONITOR:
        return (value or "").strip().lower() in ("true", "false", "yes", "no", "on", "off",
                                                 "1", "0", "")
    if key in SAFE or key.startswith(SAFE_SECTIONS):
        return True
    section, _, rest = key.partition(".")
    middle, _, name = rest.rpartition(".")
    return bool(middle) and "%s.*.%s" % (section, name) in SAFE


def split_args(args: Sequence[str]) -> Tuple[List[str], Optional[str]]:
    """The options before the subcommand that decide the repository (-C, --git-dir,
    --work-tree, as given), and the subcommand (None when there is none)."""
    where: List[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-"):
            return where, arg
        name = arg.split("=", 1)[0]
        takes = arg in _GLOBAL_WITH_ARG and i + 1 < len(args)
        if name in _PATH_OPTIONS:
            where += args[i:i + 2] if takes else [arg]
        i += 2 if takes else 1
    return where, None


class Repository:
    """Where git keeps a repository's settings and hooks (None when not in one)."""

    def __init__(self, git_dir: Path, common_dir: Path, hooks: Path):
        self.git_dir, self.common_dir, self.hooks = git_dir, common_dir, hooks

    @classmethod
    def find(cls, where: Sequence[str], git: str = REAL_GIT) -> Optional["Repository"]:
        # rev-parse reads the settings but runs none of them
        p = subprocess.run([git] + list(where) + ["rev-parse", "--path-format=absolute",
                                                  "--git-dir", "--git-common-dir",
                                                  "--git-path", "hooks"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        lines = p.stdout.splitlines()
        if p.returncode != 0 or len(lines) != 3:
            return None
        return cls(*(Path(line) for line in lines))

    def config_files(self) -> List[Path]:
        files = [self.common_dir / "config", self.git_dir / "config.worktree"]
        modules = self.common_dir / "modules"  # submodules' own repositories
        if modules.is_dir():
            files += sorted(p for p in modules.rglob("config") if p.is_file())
        return [f for f in files if f.is_file()]

    def is_own(self, path: Path) -> bool:
        """Inside the person's home (their own folder, which no one else writes)."""
        return Path.home() in path.parents


def read_settings(path: Path, git: str = REAL_GIT) -> List[Tuple[str, Optional[str]]]:
    """The file's settings as git reads them (includes not followed: they are settings too)."""
    p = subprocess.run([git, "config", "--file", str(path), "--no-includes", "--list", "-z"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out: List[Tuple[str, Optional[str]]] = []
    for entry in p.stdout.decode("utf-8", "replace").split("\0"):
        if entry:
            key, newline, value = entry.partition("\n")
            out.append((key, value if newline else None))
    return out


def hooks_in(folder: Path) -> List[Path]:
    """Hooks git would run from this folder: executable files, not the `.sample` ones."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    out = []
    for p in entries:
        try:
            st = p.stat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111 and not p.name.endswith(".sample"):
            out.append(p)
    return out


class Findings:
    """What in a repository would run a command: settings outside SAFE, and hooks; and the
    monitor its main configuration names (to pin)."""

    def __init__(self, settings: List[Tuple[Path, str, Optional[str]]], hooks: List[Path],
                 fsmonitor: str = "false"):
        self.settings, self.hooks, self.fsmonitor = settings, hooks, fsmonitor

    def __bool__(self) -> bool:
        return bool(self.settings or self.hooks)

    def digest(self) -> str:
        import hashlib  # here: with shutil, a third of the guard's start-up when imported

        h = hashlib.sha256()
        for path, key, value in self.settings:
            h.update(("setting\0%s\0%s\0%s\0" % (path, key, value)).encode())
        for hook in self.hooks:
            h.update(("hook\0%s\0" % hook).encode())
            h.update(hashlib.sha256(hook.read_bytes()).digest())
        return h.hexdigest()


def examine(repo: Repository, git: str = REAL_GIT) -> Findings:
    """Submodules' settings count (git passes on to them only the pins); their hooks do not:
    the pinned hooks folder replaces theirs too. A repository or hooks folder in the person's
    own home is theirs."""
    main = (repo.common_dir / "config", repo.git_dir / "config.worktree")
    settings, fsmonitor = [], "false"
    for path in repo.config_files():
        for key, value in read_settings(path, git):
            if path in main and key.lower() == FSMONITOR:
                fsmonitor = value or "false"
            if not is_safe(key, value):
                settings.append((path, key, value))
    hooks = [] if repo.is_own(repo.hooks) else hooks_in(repo.hooks)
    return Findings(settings, hooks, fsmonitor)


def config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def trust_file() -> Path:
    return config_home() / "cdsw" / "git-trusted"


def trusted(digest: str) -> bool:
    try:
        return digest in trust_file().read_text().split()
    except OSError:
        return False


def trust(digest: str, repo: Repository) -> None:
    path = trust_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write("%s %s\n" % (digest, repo.common_dir))


def hooks_to_run(findings: Findings, repo: Repository, digest: str) -> str:
    """The hooks folder git is pinned to: the person's own, or a private copy of the checked
    hooks (so that none written after the check runs), or none."""
    if repo.is_own(repo.hooks):
        return str(repo.hooks)
    own = findings.hooks
    if not own:
        return NO_HOOKS
    import shutil
    folder = cache_home() / "cdsw" / "git-hooks" / digest
    if not folder.is_dir():
        partial = folder.with_name(digest + ".%d" % os.getpid())
        partial.mkdir(parents=True, exist_ok=True)
        for hook in own:
            shutil.copy2(hook, partial / hook.name)
            os.chmod(partial / hook.name, 0o700)
        try:
            os.replace(partial, folder)
        except OSError:  # another git made the same copy meanwhile
            shutil.rmtree(partial, ignore_errors=True)
    return str(folder)


def refusal(findings: Findings, repo: Repository) -> str:
    lines = ["cdsw: git did not run: this repository would run commands that you have not "
             "trusted"]
    for path, key, value in findings.settings:
        lines.append("  %s: %s = %s" % (_shown(path, repo), key, value if value is not None
                                        else "(no value)"))
    for hook in findings.hooks:
        lines.append("  hook %s" % _shown(hook, repo))
    lines += ["In a project others can write to, any of them may have put these here, and git "
              "would run them as you.",
              "Look at them and remove what you do not want (git config --unset KEY, or delete "
              "the hook);",
              "or, if you trust them as they are now, run your command once with "
              "%s=1 in front (trusted until any of them changes)." % TRUST_VARIABLE]
    return "\n".join(lines) + "\n"


def _shown(path: Path, repo: Repository) -> str:
    try:
        return str(path.relative_to(repo.common_dir.parent))
    except ValueError:
        return str(path)


def _editor_env(env: Dict[str, str]) -> Dict[str, str]:
    """`git config --edit` opens the person's own editor, never the repository's."""
    env = dict(env)
    env.setdefault("GIT_EDITOR", env.get("VISUAL") or env.get("EDITOR") or "vi")
    return env


def command(args: Sequence[str], git: str = REAL_GIT,
            stderr=None) -> Optional[Tuple[List[str], Dict[str, str]]]:  # type: ignore[no-untyped-def]
    """The real git's command line and environment for `git ARGS`, or None when it must not
    run (the reason written to stderr)."""
    stderr = stderr or sys.stderr
    env = dict(os.environ)
    where, subcommand = split_args(args)
    if subcommand == "config":  # no pager: `git config --list` on a terminal runs core.pager
        return [git, "--no-pager"] + list(args), _editor_env(env)
    repo = Repository.find(where, git)
    if repo is None or repo.is_own(repo.common_dir):
        return [git] + list(args), env
    findings = examine(repo, git)
    digest = findings.digest() if findings else ""
    if findings and not trusted(digest):
        if env.get(TRUST_VARIABLE) != "1":
            stderr.write(refusal(findings, repo))
            return None
        trust(digest, repo)
    pins = ["-c", "core.hooksPath=" + hooks_to_run(findings, repo, digest),
            "-c", "core.fsmonitor=" + findings.fsmonitor]
    env.pop(TRUST_VARIABLE, None)
    return [git] + pins + list(args), env


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        run = command(args)
    except OSError as e:
        sys.stderr.write("cdsw: git did not run: %s\n" % e)
        return 1
    if run is None:
        return 1
    cmd, env = run
    os.execve(cmd[0], cmd, env)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
