"""A minimal stand-in for Ambari's resource_management library, for the mpack contract tests.

Boundary: only the calls the CDSW scripts use are implemented, with the signatures and the
behaviour documented for Ambari 2.7/3.0 (docs/packaging.md, "Sources"): Script.execute()'s argv
(command, command JSON, base dir, structured-output file, log level, tmp dir), Script.get_config,
default('/a/b', fallback), Execute (runs the command for real through /bin/sh, with
environment, ignoring `user=`/`sudo=` since tests run as one user), File/Directory (really write
and create; owner/group ignored), check_process_status and the exceptions. Every resource is
also appended to $RM_STUB_LOG as one JSON line so tests can see what a script asked for.
Written for Python 2.7 and 3 like the scripts themselves.
"""
