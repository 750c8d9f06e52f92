"""Health checks shared by `cdsw health`, `cdsw logs`, /metrics and the managers' alerts.

Importing this package registers every check in REGISTRY::

    from cdsw_agent.health import REGISTRY
    results = REGISTRY.run(settings, role="worker")
"""

from .registry import (REGISTRY, Check, CheckResult, HealthContext, Outcome, Registry, Status,
                       UnknownCheck, worst)
# imported for their registrations; this order is the order checks are reported in
from . import docker_checks  # noqa: F401,I001
from . import master_checks  # noqa: F401
from . import host_checks  # noqa: F401
from . import cluster_clients_check  # noqa: F401
from . import tls_check  # noqa: F401

__all__ = ["REGISTRY", "Check", "CheckResult", "HealthContext", "Outcome", "Registry", "Status",
           "UnknownCheck", "worst"]
