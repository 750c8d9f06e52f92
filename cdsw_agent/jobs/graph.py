"""Dependencies between jobs: each job has at most one parent, so a pipeline is a forest."""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional


def find_cycle(parents: Mapping[int, Optional[int]], job_id: int,
               new_parent: Optional[int]) -> Optional[List[int]]:
    """The cycle that giving `job_id` the parent `new_parent` would make, as
    [job_id, new_parent, ..., job_id], or None. `parents` maps each job to its parent now."""
    if new_parent is None:
        return None
    path = [job_id]
    seen = {job_id}
    current: Optional[int] = new_parent
    while current is not None:
        path.append(current)
        if current == job_id:
            return path
        if current in seen:  # an older cycle not through job_id; never follow it forever
            return None
        seen.add(current)
        current = parents.get(current)
    return None


def children(parents: Mapping[int, Optional[int]], job_id: int) -> List[int]:
    return sorted(j for j, p in parents.items() if p == job_id)


def pipeline(jobs: Mapping[int, Dict], parents: Mapping[int, Optional[int]]) -> Dict[str, List]:
    """Nodes (the given job descriptions, by id) and parent → child edges."""
    nodes = [dict(jobs[j], id=j) for j in sorted(jobs)]
    edges = [{"from": p, "to": j} for j, p in sorted(parents.items())
             if p is not None and p in jobs and j in jobs]
    return {"nodes": nodes, "edges": edges}
