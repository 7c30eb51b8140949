"""Who holds a lease, and whether that process is still there.

A lease owner reads ``host:pid:start:boot:pidns``: the host and pid a support engineer looks
for, plus what makes the pair unambiguous on Linux - the process's start time (clock ticks after
boot, /proc/PID/stat field 22), the boot id (/proc/sys/kernel/random/boot_id) and the pid
namespace (/proc/self/ns/pid). A holder is known gone only when all of host, boot and namespace
are ours and its pid is absent or now belongs to a process started at another time (a reused
pid). Another host, another container or a system without /proc: never known gone, so its lease
is waited out until it expires.
"""

from __future__ import annotations

import os
import socket
from functools import cache

OWNER_LENGTH = 100  # leases.owner and runs.owner are VARCHAR(100)


@cache
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip().replace("-", "")[:8]
    except OSError:
        return ""


@cache
def _pid_namespace() -> str:
    try:
        link = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return ""
    return link.partition("[")[2].rstrip("]")


def start_ticks(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot), or None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except (OSError, ValueError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses itself.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _host(tail: str) -> str:
    return socket.gethostname()[: OWNER_LENGTH - len(tail) - 1]


def owner_id() -> str:
    """This process, as a lease and run owner: ``host:pid:start:boot:pidns``."""
    pid = os.getpid()
    tail = f"{pid}:{start_ticks(pid) or ''}:{_boot_id()}:{_pid_namespace()}"
    return f"{_host(tail)}:{tail}"


def run_owner(token: str) -> str:
    """One run of this process, as a lease and run owner: :func:`owner_id` and ``token``, so
    two runs of one process (threads, a test) are two owners, each fenced out of the other's
    lease. The host is cut to keep it within OWNER_LENGTH (see :func:`holder_gone`)."""
    pid = os.getpid()
    tail = f"{pid}:{start_ticks(pid) or ''}:{_boot_id()}:{_pid_namespace()}:{token}"
    return f"{_host(tail)}:{tail}"


def holder_gone(owner: str) -> bool:
    """True only when ``owner`` was a process on this host, this boot and this pid namespace
    that no longer runs (its pid is free, or taken by a later process)."""
    parts = owner.split(":")
    if len(parts) < 5:
        return False  # an older owner form, or a creation lock cut short: wait for expiry
    host, pid, ticks, boot, namespace = parts[:5]
    if not (pid.isdigit() and ticks and boot and namespace):
        return False
    # the host as this process would have cut it, without or with a run's token after it
    hosts = {_host(":".join(parts[1:5])), _host(":".join(parts[1:]))}
    if host not in hosts or boot != _boot_id() or namespace != _pid_namespace():
        return False
    return start_ticks(int(pid)) != ticks
