"""Session start latency on the swarm backend: from the start request to the kernel answering
`1+1` through the master's API, p50/p95 over N starts. Measures, never asserts.

Builds what it measures like tests/integration/test_sessions_swarm.py does: a host in a network
namespace with its own dockerd (the CDSW_DOCKER role), a one-node swarm, the engine image
(built or reused on the test dockerd, then loaded into the host) and the master app in this
process, which reaches each engine at its node's address. Needs root and dockerd.

    CDSW_TEST_KEEP_DOCKERD=1 .venv/bin/python benchmarks/session_start.py [--starts 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def percentile(values: List[float], p: float) -> float:
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=10)
    args = parser.parse_args()

    import docker

    from cdsw_agent.images import Progress, Recipe, build_image, transfer
    from cdsw_agent.sessions.monitor import manager_for
    from tests.integration.docker_fixtures import CACHE_DIR, START_SCRIPT
    from tests.integration.netns import Lab, available
    from tests.integration.test_sessions_swarm import swarm_master

    reason = available()
    if reason:
        print("cannot run: %s" % reason)
        return 2
    url = subprocess.run(["bash", str(START_SCRIPT)], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    build = build_image(docker.DockerClient(base_url=url, timeout=300), Recipe(), CACHE_DIR,
                        Progress(lambda line: None))
    tmp = Path(tempfile.mkdtemp(prefix="cdsw-bench-sessions-"))
    saved = transfer.save_image(docker.DockerClient(base_url=url, timeout=300), build.image,
                                tmp / "engine.tar")
    rows = []
    with Lab(Path("/var/lib/cdsw-lab") / ("bench-" + os.urandom(3).hex())) as lab:
        m = swarm_master(lab, saved.path, build.image, tmp / "data")
        try:
            for i in range(args.starts):
                t0 = time.monotonic()
                sid = m.start()["id"]
                s = m.wait(sid, "running", "failed")
                t_running = time.monotonic() - t0
                assert s["status"] == "running", s
                out = m.execute(sid, "1+1")
                total = time.monotonic() - t0
                assert out[0]["data"]["text/plain"] == "2", out
                rows.append((t_running, total))
                print("start %d: running after %.2f s, 1+1 answered after %.2f s"
                      % (i + 1, t_running, total), flush=True)
                m.client.post("/api/v1/sessions/%d/stop" % sid)
                m.wait(sid, "stopped", "failed", timeout=60)
        finally:
            orch = manager_for(m.api.client.app.state.server).orchestrator
            for ref in orch.list():
                orch.remove(ref.id)
    running = [r[0] for r in rows]
    totals = [r[1] for r in rows]
    print()
    print("> Session start (request -> kernel answers `1+1`), swarm backend, one node, %s, "
          "%d cores, Python %s" % (platform.machine(), os.cpu_count(), platform.python_version()))
    print()
    print("| starts | status running p50 s | p95 s | `1+1` answered p50 s | p95 s | mean s |")
    print("|---:|---:|---:|---:|---:|---:|")
    print("| %d | %.2f | %.2f | %.2f | %.2f | %.2f |" % (
        len(rows), percentile(running, 50), percentile(running, 95), percentile(totals, 50),
        percentile(totals, 95), statistics.mean(totals)))
    json.dump({"running": running, "answered": totals}, open(tmp / "result.json", "w"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
