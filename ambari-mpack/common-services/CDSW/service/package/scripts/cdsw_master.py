#!/usr/bin/env python
"""CDSW_MASTER: the web UI, API, router and scheduler (`cdsw role master start`)."""

from resource_management.core.exceptions import Fail

import cdsw_common


class CdswMaster(cdsw_common.CdswRoleScript):
    ROLE = "master"

    def create_admin(self, env):
        params = self.load(env)
        if not params.first_admin_password:
            raise Fail("first_admin_password in cdsw-env is empty: set it, then run CREATE_ADMIN")
        cdsw_common.run(params, ["admin", "create-user", params.first_admin_username, "--admin",
                                 "--password-stdin"], params.user,
                        stdin_text=params.first_admin_password)

    def build_images(self, env):
        params = self.load(env)
        cdsw_common.run(params, ["images", "build"], params.user)

    def backup_db(self, env):
        params = self.load(env)
        cdsw_common.run(params, ["db", "backup"], params.user)

    def cdsw_status(self, env):
        params = self.load(env)
        cdsw_common.run(params, ["status"], params.user)


if __name__ == "__main__":
    CdswMaster().execute()
