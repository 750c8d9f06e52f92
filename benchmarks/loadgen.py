"""A closed-loop HTTP load generator, run as its own process so that it never shares a GIL with
what it measures: C concurrent callers (aiohttp on uvloop, keep-alive) send a fixed number of
requests in total and the process prints one JSON line: requests/s, latencies, errors.

    python benchmarks/loadgen.py URL --method POST --body '{"..."}' --header 'K: V'
        --concurrency 32 --requests 3000 [--expect-json-true success]

Every benchmark uses the same generator for its own target and its peers, so the ratios do not
depend on the client's cost (which is real: it runs on the same cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any, Dict, List, Optional


async def run(url: str, method: str, body: Optional[bytes], headers: Dict[str, str],
              concurrency: int, total: int, expect: str) -> Dict[str, Any]:
    import aiohttp

    latencies: List[float] = []
    errors: Dict[str, int] = {}
    remaining = [total]
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def caller() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                t0 = time.perf_counter()
                try:
                    async with session.request(method, url, data=body, headers=headers) as r:
                        raw = await r.read()
                        status = r.status
                except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                    continue
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    errors["HTTP %d" % status] = errors.get("HTTP %d" % status, 0) + 1
                elif expect and json.loads(raw).get(expect) is not True:
                    errors["not " + expect] = errors.get("not " + expect, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100.0 * len(latencies)))] * 1000 \
            if latencies else float("nan")

    return {"requests": len(latencies), "rps": len(latencies) / wall, "p50_ms": pct(50),
            "p99_ms": pct(99), "errors": sum(errors.values()), "error_kinds": errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--method", default="GET")
    ap.add_argument("--body", default=None)
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--expect-json-true", default="", help="a key that must be true in answers")
    args = ap.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    try:
        from uvloop import run as run_loop
    except ImportError:
        run_loop = asyncio.run
    result = run_loop(run(args.url, args.method,
                             args.body.encode() if args.body is not None else None, headers,
                             args.concurrency, args.requests, args.expect_json_true))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
