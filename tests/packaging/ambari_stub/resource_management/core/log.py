import json
import os


def record(kind, **fields):
    """Append one resource call to $RM_STUB_LOG (JSON lines)."""
    path = os.environ.get("RM_STUB_LOG")
    if not path:
        return
    fields["resource"] = kind
    with open(path, "a") as fh:
        fh.write(json.dumps(fields, sort_keys=True, default=str) + "\n")
