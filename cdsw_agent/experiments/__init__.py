"""Experiments: a script run with arguments against a snapshot of the project's files, with
metrics and files tracked by the engine's `cdsw` library (the top-level `cdsw` package).

- snapshot.py: the copy of the project a run works on, taken at launch;
- tracking.py: what the `cdsw` library recorded (metrics, tracked files), read by the master;
- launch.py: a run's script, engine, profile, environment and mounts as a WorkloadSpec;
- runner.py: starts runs, follows them to their end (shared with jobs: workloads/oneshot.py),
  re-adopts them after a master restart and keeps their results.
"""
