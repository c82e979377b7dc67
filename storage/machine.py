"""What this machine has and how processes end with it: live process ids, memory, a child
that dies with its parent."""

from __future__ import annotations

import os
import signal

GIB = 2**30


def alive(pid: int) -> bool:
    """Whether process ``pid`` (of this host) exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def available_memory() -> int:
    """Bytes of memory that can still be had without swapping (Linux's MemAvailable; elsewhere
    the free physical pages)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def die_with_parent(parent: int, signum: int = signal.SIGKILL) -> None:
    """Have the kernel send ``signum`` to this process when its parent dies, kill -9
    included, which the parent cannot pass on (Linux's PR_SET_PDEATHSIG; elsewhere nothing
    changes). For a process started by ``parent``: a pool initializer, a ``preexec_fn``."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signum)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
