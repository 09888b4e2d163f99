"""Who wrote something, and whether that process is still there.

Records of long work (an eval run marked ``running``) and scratch files (an artifact being
written, a weight copy being exported) carry their owner: a process id and the machine it
runs on. A process killed with SIGKILL (or by a power cut) cleans nothing up; its owner tag
is how a later process tells its leftovers from a live writer's work in progress.

The machine is named by a short hash of the host name and the PID namespace: containers on
one host that share its host name (``--network host``) but not its process table must not
take each other's live writers for dead.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path


@functools.cache
def _pid_namespace() -> str:
    with contextlib.suppress(OSError):
        return str(Path("/proc/self/ns/pid").readlink())  # "pid:[4026531836]" on Linux
    return ""


def machine_id() -> str:
    """Eight hex digits naming this host (and PID namespace): whose pids this process can
    check. The host name is read each time (cheap), so a renamed host is seen as another."""
    text = f"{socket.gethostname()}\x00{_pid_namespace()}"
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def owner_tag() -> str:
    """``PID-MACHINE`` of this process, for names of scratch files and folders."""
    return f"{os.getpid()}-{machine_id()}"


_TAG = re.compile(r"(?<![0-9])(?P<pid>[0-9]{1,10})-(?P<machine>[0-9a-f]{8})-")


@dataclass(frozen=True)
class Owner:
    pid: int
    machine: str

    @property
    def local(self) -> bool:
        """Whether its pid can be checked from this process."""
        return self.machine == machine_id()


def owner_in(name: str) -> Owner | None:
    """The owner a scratch name carries (``...PID-MACHINE-...``), or None."""
    found = _TAG.search(name)
    if found is None:
        return None
    return Owner(int(found["pid"]), found["machine"])


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a zombie, killed but not yet reaped
    by its parent, counts as gone)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process
    except OverflowError:
        return False
    with contextlib.suppress(OSError, IndexError):
        # "pid (comm) S ...": the state follows the last ')' (comm may hold one)
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        if stat.rpartition(b")")[2].split()[0] == b"Z":
            return False
    return True


def owner_gone(owner: Owner) -> bool:
    """Whether the owner is certainly dead: on this machine with its pid gone. An owner on
    another machine cannot be checked from here and is never called gone."""
    return owner.local and not pid_alive(owner.pid)


def is_leftover(name: str, age_s: float, max_age_s: float) -> bool:
    """Whether a scratch entry called ``name``, last changed ``age_s`` seconds ago, is the
    leftover of a dead writer: its owner (named in it) is gone from this machine, or, when
    its owner cannot be checked from here (another machine, a name without an owner), it is
    older than ``max_age_s``. A live owner's entry is never a leftover, however old."""
    owner = owner_in(name)
    if owner is not None and owner.local:
        return not pid_alive(owner.pid)
    return age_s > max_age_s
