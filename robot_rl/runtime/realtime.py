"""Real-time scheduling for control threads (best effort: root, CAP_SYS_NICE or an rtprio limit)."""
from __future__ import annotations

import os

HINT = ("allow it with `ulimit -r 99`, an rtprio entry in /etc/security/limits.conf, or CAP_SYS_NICE; "
        "--rt-priority 0 silences this")


def make_fifo(priority: int) -> str | None:
    """Put the calling thread on SCHED_FIFO at `priority`; None on success, else why not."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(priority)))
    except (PermissionError, OSError, AttributeError) as e:
        return str(e)
    return None


def fifo_for_control_thread(priority: int, log) -> bool:
    """As the nodes do it: log the outcome (info, or a warning with the fix) and say whether it worked."""
    err = make_fifo(priority)
    if err is None:
        log.info(f"control thread runs SCHED_FIFO priority {priority}")
        return True
    log.warning(f"--rt-priority {priority}: cannot set SCHED_FIFO ({err}); the control thread runs with normal "
                f"priority ({HINT})")
    return False
