"""The `cdsw` library engines offer to experiment scripts, with CDSW's names:

    import cdsw
    cdsw.track_metric("accuracy", 0.93)   # a number or a short string; the last value wins
    cdsw.track_file("model.pkl")          # a file of the run, kept with the run's results

Inside an experiment run the launcher sets CDSW_EXPERIMENT_ID and CDSW_EXPERIMENT_DIR (a
directory of the run that the master reads, mounted into the engine, so no network access or
token is needed on any node). Each call appends one JSON line there; the master reads them while
the run lasts and after it ends, and copies tracked files out of the run's files at the end, so
a tracked file may still change until the script exits. Outside an experiment (a session, a
laptop) both calls do nothing and warn once.

Standard library only, Python 3.6 and later: it runs inside every engine image.
"""

import json
import math
import numbers
import os
import threading
import time
import warnings

__all__ = ["track_metric", "track_file"]

# The contract with the master (cdsw_agent/experiments reads the same names).
ENV_EXPERIMENT_ID = "CDSW_EXPERIMENT_ID"
ENV_EXPERIMENT_DIR = "CDSW_EXPERIMENT_DIR"  # where the records file goes
ENV_FILES_DIR = "CDSW_EXPERIMENT_FILES_DIR"  # the run's files (/home/cdsw in a container)
ENV_MAX_FILE_BYTES = "CDSW_TRACK_FILE_MAX_BYTES"
RECORDS_FILE = "tracking.jsonl"
MAX_NAME_LENGTH = 100
MAX_STRING_LENGTH = 256
DEFAULT_MAX_FILE_BYTES = 100 * 1024 * 1024

_lock = threading.Lock()
_warned = []  # non-empty once the outside-the-workbench warning was given


def _records_path():
    """The records file of this run, or None outside an experiment run."""
    directory = os.environ.get(ENV_EXPERIMENT_DIR)
    if not os.environ.get(ENV_EXPERIMENT_ID) or not directory:
        return None
    return os.path.join(directory, RECORDS_FILE)


def _outside():
    if not _warned:
        _warned.append(True)
        warnings.warn("cdsw: not running as a workbench experiment (no %s); track_metric and "
                      "track_file do nothing here" % ENV_EXPERIMENT_ID, RuntimeWarning,
                      stacklevel=3)


def _append(record):
    path = _records_path()
    line = json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n"
    with _lock:
        # one write of one line in append mode: records from threads never interleave
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)


def _check_name(name):
    if not isinstance(name, str) or not name.strip():
        raise ValueError("cdsw.track_metric: the name must be a non-empty string, not %r"
                         % (name,))
    if len(name) > MAX_NAME_LENGTH or any(ord(c) < 32 for c in name):
        raise ValueError("cdsw.track_metric: the name %r must be one line of at most %d "
                         "characters" % (name[:120], MAX_NAME_LENGTH))


def _check_value(name, value):
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError("cdsw.track_metric(%r): %r is not a finite number" % (name, value))
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING_LENGTH:
            raise ValueError("cdsw.track_metric(%r): strings may be at most %d characters; "
                             "track a file for longer text" % (name, MAX_STRING_LENGTH))
        return value
    raise TypeError("cdsw.track_metric(%r): the value must be a number or a string, not %s"
                    % (name, type(value).__name__))


def track_metric(name, value):
    """Record a metric of this run: a number (int, float, numpy scalar) or a short string.
    Tracking the same name again replaces its value (each value is kept in the history)."""
    _check_name(name)
    value = _check_value(name, value)
    if _records_path() is None:
        _outside()
        return
    _append({"metric": name, "value": value, "time": time.time()})


def _max_file_bytes():
    try:
        return int(os.environ.get(ENV_MAX_FILE_BYTES) or DEFAULT_MAX_FILE_BYTES)
    except ValueError:
        return DEFAULT_MAX_FILE_BYTES


def track_file(path):
    """Keep a file of this run (inside the project folder) with the run's results, where the
    API lists it and offers it for download. Its content at the end of the run is kept."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError("cdsw.track_file: give the path of a file, not %r" % (path,))
    if _records_path() is None:
        _outside()
        return
    root = os.path.realpath(os.environ.get(ENV_FILES_DIR) or os.getcwd())
    real = os.path.realpath(os.path.join(os.getcwd(), os.fspath(path)))
    if real != root and not real.startswith(root + os.sep):
        raise ValueError("cdsw.track_file: %s is outside the project folder %s; write it into "
                         "the project first" % (path, root))
    if not os.path.isfile(real):
        raise ValueError("cdsw.track_file: %s is not a file; write it before tracking it"
                         % (path,))
    size, limit = os.path.getsize(real), _max_file_bytes()
    if size > limit:
        raise ValueError("cdsw.track_file: %s is %d bytes; tracked files may be at most %d "
                         "bytes" % (path, size, limit))
    rel = os.path.relpath(real, root).replace(os.sep, "/")
    _append({"file": rel, "time": time.time()})
