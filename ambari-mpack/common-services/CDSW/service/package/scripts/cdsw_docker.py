#!/usr/bin/env python
"""CDSW_DOCKER: the Docker daemon of every CDSW host (`cdsw role docker start`, as root)."""

from resource_management.libraries.script.script import Script

import cdsw_common

ROLE = "docker"
RUN_AS = "root"


class CdswDocker(Script):
    def install(self, env):
        import params
        env.set_params(params)
        cdsw_common.install(params)
        cdsw_common.configure(params)
        cdsw_common.run(params, ["role", ROLE, "prepare"], RUN_AS)

    def configure(self, env, upgrade_type=None, config_dir=None):
        import params
        env.set_params(params)
        cdsw_common.configure(params)

    def start(self, env, upgrade_type=None):
        import params
        env.set_params(params)
        cdsw_common.start(params, ROLE, RUN_AS)

    def stop(self, env, upgrade_type=None):
        import params
        env.set_params(params)
        cdsw_common.stop(params, ROLE)

    def status(self, env):
        cdsw_common.status(ROLE)

    def validate(self, env):
        import params
        env.set_params(params)
        cdsw_common.configure(params)
        cdsw_common.run(params, ["validate"], RUN_AS)

    def collect_diagnostics(self, env):
        import params
        env.set_params(params)
        out = "{0}/cdsw-diagnostics-{1}.tar.gz".format(params.log_dir, params.hostname or "host")
        cdsw_common.run(params, ["logs", "--out", out], RUN_AS)


if __name__ == "__main__":
    CdswDocker().execute()
