#!/usr/bin/env python
"""CDSW_WORKER: joins the master's swarm and serves engines (`cdsw role worker start`)."""

from resource_management.libraries.script.script import Script

import cdsw_common

ROLE = "worker"


class CdswWorker(Script):
    def install(self, env):
        import params
        env.set_params(params)
        cdsw_common.install(params)
        cdsw_common.configure(params)

    def configure(self, env, upgrade_type=None, config_dir=None):
        import params
        env.set_params(params)
        cdsw_common.configure(params)

    def start(self, env, upgrade_type=None):
        import params
        env.set_params(params)
        cdsw_common.refuse_worker_on_master(params)
        cdsw_common.start(params, ROLE, params.user)

    def stop(self, env, upgrade_type=None):
        import params
        env.set_params(params)
        cdsw_common.stop(params, ROLE)

    def status(self, env):
        cdsw_common.status(ROLE)


if __name__ == "__main__":
    CdswWorker().execute()
