"""The shell of an engine's terminals: bash, interactive, with the environment kernels get.

A login shell (`bash -l`) reads /etc/profile first, and Debian's resets PATH to
/usr/local/bin:/usr/bin:/bin: the terminal lost the image's virtualenv (python, pip, jupyter)
and the cluster's clients (spark-submit, hdfs, ...) that the engine's PATH holds. So the shell
starts with a start-up file of its own that reads what a login shell reads from $HOME (the
launcher's own folder, never the project) and /etc/bash.bashrc, and leaves PATH as the engine
set it; the user's ~/.profile may still extend it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import List

RCFILE = """\
# Start-up file of a CDSW engine terminal (cdsw_agent/engine/terminal.py): the engine's PATH,
# then the start-up files a login shell reads from $HOME.
if [ -r /etc/bash.bashrc ]; then . /etc/bash.bashrc; fi
for f in "$HOME/.bash_profile" "$HOME/.bash_login" "$HOME/.profile"; do
  if [ -r "$f" ]; then . "$f"; break; fi
done
unset f
"""


def write_rcfile() -> str:
    """RCFILE in a new private directory; its path."""
    directory = tempfile.mkdtemp(prefix="cdsw-terminal-")
    path = os.path.join(directory, "bashrc")
    with open(path, "w") as f:
        f.write(RCFILE)
    os.chmod(path, 0o400)
    return path


def shell_command() -> List[str]:
    bash = shutil.which("bash")
    if bash is None:
        return ["/bin/sh", "-l"]
    return [bash, "--rcfile", write_rcfile(), "-i"]
