import json
import sys

from resource_management.core.exceptions import ComponentIsNotRunning, Fail


class _Env(object):
    def __init__(self):
        self.params = None

    def set_params(self, params):
        self.params = params


class Script(object):
    config = None
    tmp_dir = None
    structured_out = {}

    @staticmethod
    def get_config():
        return Script.config

    @staticmethod
    def get_tmp_dir():
        return Script.tmp_dir

    def put_structured_out(self, value):
        Script.structured_out.update(value)

    def execute(self):
        """argv: COMMAND COMMAND_JSON BASEDIR STRUCTURED_OUT LOGLEVEL TMP_DIR, as the agent passes."""
        if len(sys.argv) < 7:
            sys.stderr.write("usage: script COMMAND COMMAND_JSON BASEDIR OUT LEVEL TMPDIR\n")
            sys.exit(1)
        command, json_path, _basedir, out_path, _level, tmp_dir = sys.argv[1:7]
        with open(json_path) as fh:
            Script.config = json.load(fh)
        Script.tmp_dir = tmp_dir
        method = getattr(self, command.lower(), None)
        if method is None:
            sys.stderr.write("Script '{0}' has no method '{1}'\n".format(sys.argv[0],
                                                                        command.lower()))
            sys.exit(1)
        code = 0
        try:
            method(_Env())
        except ComponentIsNotRunning as e:
            sys.stderr.write("ComponentIsNotRunning: {0}\n".format(e))
            code = 1
        except Fail as e:
            sys.stderr.write("Fail: {0}\n".format(e))
            code = 1
        with open(out_path, "w") as fh:
            json.dump(Script.structured_out, fh)
        sys.exit(code)
