#!/usr/bin/env python
"""Service check: the master answers and reports itself ready (`cdsw health --check master_api`)."""

from resource_management.libraries.script.script import Script

import cdsw_common


class CdswServiceCheck(Script):
    def service_check(self, env):
        import params
        env.set_params(params)
        cdsw_common.configure(params)
        from resource_management.core.resources.system import Execute
        Execute(cdsw_common.cdsw_command(params, ["health", "--check", "master_api"]),
                user=params.user, environment=cdsw_common.agent_environment(params),
                tries=3, try_sleep=10, logoutput=True)


if __name__ == "__main__":
    CdswServiceCheck().execute()
