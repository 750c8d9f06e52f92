"""Check of the cluster clients engines get (clientconfig.distributions): found where the
setting says, with Java, in `cdsw health` and `cdsw validate`."""

from __future__ import annotations

import os

from ..clientconfig.distributions import cluster_clients
from ..errors import UserError
from .registry import REGISTRY, HealthContext, Outcome, critical, ok, warning
from .validate import VALIDATE

DESCRIPTION = ("The cluster's Spark, Hadoop and Hive clients (cluster_client_kind, "
               "cluster_client_dirs) and java_home exist on this gateway.")


def check(ctx: HealthContext) -> Outcome:
    settings = ctx.settings
    try:
        clients = cluster_clients(settings)
    except UserError as e:
        return critical(str(e))
    java_home = settings.java_home
    java = os.path.join(java_home, "bin", "java") if java_home else ""
    java_ok = bool(java) and os.access(java, os.X_OK)
    d = clients.distribution
    if d is None:
        if clients.notes:
            return warning(clients.notes[0] + "; set cluster_client_dirs to where they are")
        return ok("none (cluster_client_kind %s)" % settings.cluster_client_kind,
                  kind=settings.cluster_client_kind)
    commands = d.commands()
    details = dict(kind=d.kind, roots=list(d.roots), spark_home=d.spark_home,
                   hadoop_home=d.hadoop_home, commands=sorted(commands), java_home=java_home)
    found = "%s clients in %s (%s)" % (d.kind, ", ".join(d.roots),
                                       ", ".join(sorted(commands)) or "no commands")
    if java_home and not java_ok:
        return critical("%s; java_home %s has no bin/java: set java_home to the gateway's JDK"
                        % (found, java_home), **details)
    if not java_home:
        return warning("%s; java_home is empty, so engines get no Java and Spark cannot start: "
                       "set java_home" % found, **details)
    if d.spark_home and not d.python_path:
        return warning("%s; %s has no python/pyspark or py4j zip, so `import pyspark` will not "
                       "find the cluster's Spark" % (found, d.spark_home), **details)
    return ok("%s; Java %s" % (found, java_home), **details)


REGISTRY.register("cluster_clients", DESCRIPTION, roles=("master", "worker"))(check)
VALIDATE.register("cluster_clients", DESCRIPTION)(check)
