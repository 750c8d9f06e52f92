import os
import subprocess
import time

from resource_management.core.exceptions import ExecutionFailed, Fail
from resource_management.core.log import record


def _shell(command):
    if isinstance(command, (tuple, list)):
        return list(command)
    return ["/bin/sh", "-c", command]


def Execute(command, user=None, environment=None, cwd=None, path=None, timeout=None, tries=1,
            try_sleep=0, logoutput=None, not_if=None, only_if=None, sudo=False,
            wait_for_finish=True, returns=None):
    record("Execute", command=command, user=user, environment=environment or {}, not_if=not_if,
           tries=tries, sudo=sudo)
    if not_if is not None and subprocess.call(_shell(not_if)) == 0:
        return
    if only_if is not None and subprocess.call(_shell(only_if)) != 0:
        return
    env = dict(os.environ)
    env.update(dict((k, str(v)) for k, v in (environment or {}).items()))
    allowed = returns or [0]
    for attempt in range(tries):
        proc = subprocess.Popen(_shell(command), env=env, cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        out = proc.communicate()[0]
        if not isinstance(out, str):
            out = out.decode("utf-8", "replace")
        if logoutput:
            print(out)
        if proc.returncode in allowed:
            return
        if attempt + 1 < tries:
            time.sleep(try_sleep)
    raise ExecutionFailed("Execution of '{0}' returned {1}. {2}".format(
        command, proc.returncode, out), proc.returncode, out)


def File(path, content=None, owner=None, group=None, mode=None, action="create", encoding=None):
    """As Ambari's FileProvider and sudo.create_file: the file is opened "wb" and the content
    encoded with `encoding` when one is given, else written as it is (on Python 2 a unicode
    content is then encoded as ASCII by the interpreter and non-ASCII text raises)."""
    record("File", path=path, owner=owner, group=group, mode=mode, action=action,
           encoding=encoding, content=content)
    if action == "delete":
        if os.path.exists(path):
            os.remove(path)
        return
    if action != "create":
        raise Fail("File: unknown action {0}".format(action))
    if not os.path.isdir(os.path.dirname(path)):
        raise Fail("Applying File['{0}'] failed, parent directory {1} doesn't exist".format(
            path, os.path.dirname(path)))
    data = content or ""
    if encoding:
        data = data.encode(encoding)
    elif not isinstance(data, bytes):
        data = data.encode("ascii")  # what Python 2's implicit conversion of unicode does
    with open(path, "wb") as fh:
        fh.write(data)
    if mode is not None:
        os.chmod(path, mode)


def Directory(path, owner=None, group=None, mode=None, create_parents=False, cd_access=None,
              recursive_ownership=None):
    paths = path if isinstance(path, (list, tuple)) else [path]
    for p in paths:
        record("Directory", path=p, owner=owner, group=group, mode=mode)
        if not os.path.isdir(p):
            if create_parents:
                os.makedirs(p)
            else:
                os.mkdir(p)
        if mode is not None:
            os.chmod(p, mode)
