"""How a workload ended, and what went wrong in a backend, in sentences a user can act on.

Every backend builds its `WorkloadStatus.reason` here, so sessions, jobs, experiments and model
replicas all say "killed by SIGKILL (out of memory: ...)" rather than "exit code 137", and no
backend's own error text (Docker's "No such container: ...", an HTTP library's exception) is
shown to users: `backend_error` logs it in one line and returns the sentence to show.
"""

from __future__ import annotations

import logging
import signal
from typing import Optional

from .base import OrchestratorError

ENGINE_GONE = "the engine is no longer running"
IMAGE_MISSING = "is not present on node"  # part of every missing-image reason (see image_missing)
# how the end by each signal reads; others are "killed by SIGxxx"
SIGNAL_VERBS = {signal.SIGTERM: "terminated by", signal.SIGINT: "interrupted by",
                signal.SIGHUP: "hung up by"}


def memory_text(n: int) -> str:
    """2147483648 -> "2 GiB", 1610612736 -> "1.5 GiB", 536870912 -> "512 MiB"."""
    if n >= 1 << 30:
        return ("%.1f" % (n / (1 << 30))).rstrip("0").rstrip(".") + " GiB"
    return "%d MiB" % max(1, round(n / (1 << 20)))


def signal_of(exit_code: Optional[int]) -> Optional[signal.Signals]:
    """The signal an exit code of 128+N stands for (as shells and Docker report it)."""
    if exit_code is None or not 128 < exit_code < 128 + 65:
        return None
    try:
        return signal.Signals(exit_code - 128)
    except ValueError:
        return None


def exit_reason(exit_code: Optional[int], oom: Optional[bool] = False,
                memory_limit: int = 0) -> str:
    """Why a workload that exited with `exit_code` ended. `oom`: True when the backend knows
    the kernel's OOM killer ended it, None when it cannot tell (a killed workload under a memory
    limit is then said to have probably run out of memory)."""
    if exit_code is None:
        return "the engine ended"
    sig = signal_of(exit_code)
    if sig is None:
        return "exit code %d" % exit_code
    text = "%s %s" % (SIGNAL_VERBS.get(sig, "killed by"), sig.name)
    if sig == signal.SIGKILL and oom is not False:
        limit = "more than its %s profile" % memory_text(memory_limit) if memory_limit \
            else "more memory than its profile allows"
        if oom:
            text += " (out of memory: the engine used %s; choose a larger profile)" % limit
        elif memory_limit:
            text += " (probably out of memory: the engine may have used %s)" % limit
    return text


def image_missing_reason(image: str, node: Optional[str]) -> str:
    return ("could not start the engine: the image %s %s %s; build or distribute it "
            "(cdsw images build) or choose another image" % (image, IMAGE_MISSING, node or "?"))


def image_missing(reason: str) -> bool:
    """The reason says the node does not have the image (yet)."""
    return IMAGE_MISSING in (reason or "")


def first_line(text: object) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else ""


def backend_error(log: logging.Logger, sentence: str, raw: object) -> OrchestratorError:
    """Logs the backend's own words (one line) and returns the error that shows `sentence`."""
    log.warning("%s: %s", sentence, first_line(raw) or type(raw).__name__)
    return OrchestratorError(sentence)
