#!/usr/bin/env python
"""CDSW_DOCKER: the Docker daemon of every CDSW host (`cdsw role docker start`, as root)."""

import cdsw_common


class CdswDocker(cdsw_common.CdswRoleScript):
    ROLE = "docker"

    def run_as(self, params):
        return "root"

    def install(self, env):
        cdsw_common.CdswRoleScript.install(self, env)
        cdsw_common.run(self.load(env), ["role", self.ROLE, "prepare"], "root")

    def validate(self, env):
        params = self.load(env)
        cdsw_common.configure(params)
        cdsw_common.run(params, ["validate"], "root")

    def collect_diagnostics(self, env):
        params = self.load(env)
        out = "{0}/cdsw-diagnostics-{1}.tar.gz".format(params.log_dir, params.hostname or "host")
        cdsw_common.run(params, ["logs", "--out", out], "root")


if __name__ == "__main__":
    CdswDocker().execute()
