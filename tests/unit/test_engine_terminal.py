"""Engine terminals keep the engine's PATH (the image's virtualenv, the cluster's clients) and
still read the user's login start-up files from $HOME (cdsw_agent/engine/terminal.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cdsw_agent.engine.server import config
from cdsw_agent.engine.terminal import shell_command


def run_shell(argv, home: Path, path: str) -> str:  # type: ignore[no-untyped-def]
    env = {"HOME": str(home), "PATH": path, "TERM": "dumb"}
    r = subprocess.run(argv, input="echo \"P=$PATH F=${FROM_PROFILE:-}\"\nexit\n", env=env,
                       capture_output=True, text=True, timeout=30)
    return next(ln for ln in r.stdout.splitlines() if ln.startswith("P="))


def test_terminal_keeps_the_engines_path_and_reads_the_users_profile(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".profile").write_text('export FROM_PROFILE=yes\nPATH="$HOME/bin:$PATH"\n')
    venv, spark = tmp_path / "venv" / "bin", tmp_path / "parcels" / "SPARK3" / "bin"
    engine_path = "%s:%s:/usr/bin:/bin" % (venv, spark)
    argv = config().ServerApp.terminado_settings["shell_command"]
    assert argv[0].endswith("bash") and "-l" not in argv
    line = run_shell(argv, home, engine_path)
    assert line == "P=%s/bin:%s F=yes" % (home, engine_path)
    rcfile = argv[argv.index("--rcfile") + 1]
    assert oct(os.stat(rcfile).st_mode & 0o777) == "0o400"
    # the control: a login shell on Debian loses the engine's PATH to /etc/profile
    if Path("/etc/debian_version").exists():
        assert str(venv) not in run_shell(["bash", "-l", "-i"], home, engine_path)
    assert shell_command() != shell_command()  # each server start writes its own file

