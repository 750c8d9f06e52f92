"""The gateway roles a cluster manager starts: CDSW_DOCKER, CDSW_MASTER, CDSW_WORKER.

Each role is one foreground process (`cdsw role NAME start`), stopped by SIGTERM.
"""

ROLE_NAMES = ("docker", "master", "worker")
