"""The Hadoop client configuration engines get: versioned bundles of what the cluster manager
deploys on a gateway (bundle.py) and the mounts, environment and Spark settings of one engine
(engine.py)::

    bundle = collect([Path("/etc/hadoop/conf"), Path("/etc/hive/conf")], bundles_dir(settings))
    config = engine_mounts_and_env(bundle, settings, "10.0.0.5", SparkPorts(20050, 20051), dir)
    config.apply(spec)  # a WorkloadSpec
"""

from .bundle import (KEEP_BUNDLES, KINDS, Bundle, bundles_dir, collect, current, current_version,
                     detect_kinds, list_bundles, prune)
from .engine import (BUNDLE_LABEL, ENV_FOR_KIND, KRB5_TARGET, MOUNT_ROOT, EngineClientConfig,
                     SparkPorts, engine_mounts_and_env, hadoop_mounts_and_env,
                     render_spark_defaults)

__all__ = ["KEEP_BUNDLES", "KINDS", "Bundle", "bundles_dir", "collect", "current",
           "current_version", "detect_kinds", "list_bundles", "prune", "BUNDLE_LABEL",
           "ENV_FOR_KIND", "KRB5_TARGET", "MOUNT_ROOT", "EngineClientConfig", "SparkPorts",
           "engine_mounts_and_env", "hadoop_mounts_and_env", "render_spark_defaults"]
