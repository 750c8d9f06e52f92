#!/usr/bin/env python
"""CDSW_MASTER: the web UI, API, router and scheduler (`cdsw role master start`)."""

from resource_management.core.exceptions import Fail
from resource_management.libraries.script.script import Script

import cdsw_common

ROLE = "master"


class CdswMaster(Script):
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
        cdsw_common.start(params, ROLE, params.user)

    def stop(self, env, upgrade_type=None):
        import params
        env.set_params(params)
        cdsw_common.stop(params, ROLE)

    def status(self, env):
        cdsw_common.status(ROLE)

    def create_admin(self, env):
        import params
        env.set_params(params)
        if not params.first_admin_password:
            raise Fail("first_admin_password in cdsw-env is empty: set it, then run CREATE_ADMIN")
        cdsw_common.run(params, ["admin", "create-user", params.first_admin_username, "--admin",
                                 "--password-stdin"], params.user,
                        stdin_text=params.first_admin_password)

    def build_images(self, env):
        import params
        env.set_params(params)
        cdsw_common.run(params, ["images", "build"], params.user)

    def backup_db(self, env):
        import params
        env.set_params(params)
        cdsw_common.run(params, ["db", "backup"], params.user)

    def cdsw_status(self, env):
        import params
        env.set_params(params)
        cdsw_common.run(params, ["status"], params.user)


if __name__ == "__main__":
    CdswMaster().execute()
