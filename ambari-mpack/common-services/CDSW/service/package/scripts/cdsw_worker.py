#!/usr/bin/env python
"""CDSW_WORKER: joins the master's swarm and serves engines (`cdsw role worker start`)."""

import cdsw_common


class CdswWorker(cdsw_common.CdswRoleScript):
    ROLE = "worker"

    def start(self, env, upgrade_type=None):
        cdsw_common.refuse_worker_on_master(self.load(env))
        cdsw_common.CdswRoleScript.start(self, env, upgrade_type)


if __name__ == "__main__":
    CdswWorker().execute()
