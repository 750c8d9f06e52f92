"""Jobs and pipelines, independent of the web layer.

- schedule.py: cron lines with a time zone, what is due, catch-up after downtime;
- graph.py: parent/child dependencies, cycle detection, the pipeline graph;
- launch.py: a job's script, engine, profile and environment as a WorkloadSpec;
- runner.py: starts runs on the orchestrator, follows them to their end, re-adopts after a
  master restart, enforces timeouts and triggers dependent jobs;
- notify.py: mail on success, failure, timeout or stop.
"""
