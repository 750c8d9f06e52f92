import os

from resource_management.core.exceptions import ComponentIsNotRunning


def check_process_status(pid_file):
    """Raise ComponentIsNotRunning for a missing pid file, a bad pid or a dead process."""
    if not pid_file or not os.path.isfile(pid_file):
        raise ComponentIsNotRunning("pid file {0} missing".format(pid_file))
    try:
        pid = int(open(pid_file).read().strip())
    except ValueError:
        raise ComponentIsNotRunning("pid file {0} holds no pid".format(pid_file))
    try:
        os.kill(pid, 0)
    except OSError:
        raise ComponentIsNotRunning("process {0} is not running".format(pid))
    # A zombie (exited child not reaped yet) is not running either.
    try:
        with open("/proc/{0}/stat".format(pid)) as fh:
            if fh.read().split(")")[-1].split()[0] == "Z":
                raise ComponentIsNotRunning("process {0} is a zombie".format(pid))
    except IOError:
        pass
