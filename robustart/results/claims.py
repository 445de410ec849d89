"""Claims: which process computes a job, or one shard of a job, right now.

A claim is a small JSON file (owner, host, pid, token, lease) in `<job>/claims/`, named after
its unit: `job` for a whole job, `shard-00003` for one shard (what a worker of a multi-process
executor holds), `meta` for the instant a process rewrites meta.json. It is created
exclusively, kept fresh by a heartbeat thread (its modification time), and released by removal.

What this relies on, so that it also holds on a shared (NFS-style) filesystem: `link(2)` and
`rename(2)` are atomic, and `link` fails when the name exists. `O_EXCL` is not relied on (it
was not atomic over NFSv2); it is only the fallback where hard links are not supported. A claim
is stale when its holder is a dead process on this host (same host name and pid namespace), or
when its heartbeat is older than its lease (another host: clocks must agree to within the
lease, `ROBUSTART_CLAIM_LEASE` seconds, default 120). A stale claim is broken by exactly one
waiter (the one that wins an exclusive link named after the stale claim's token).

Claims keep two processes from computing the same records at once; they are not what keeps the
records right. That is the job's fixed shard layout (shard i always holds the same samples and
is written whole under one name) and the checks in `ResultsStore.check`.

    claim = acquire(job_dir, "job")                      # waits while another live process holds it
    claim = acquire(job_dir, "shard-00003", wait=False)  # None if someone holds it
    ... claim.lost ...                                   # True once another process broke it
    claim.release()
"""

from __future__ import annotations

import errno
import getpass
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DEFAULT_LEASE = 120.0


def lease_seconds() -> float:
    try:
        return max(2.0, float(os.environ.get("ROBUSTART_CLAIM_LEASE", DEFAULT_LEASE)))
    except ValueError:
        return DEFAULT_LEASE


def _start_time(pid: int) -> str | None:
    """The process's start time (Linux), so a reused pid is not taken for the claim's holder."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_namespace() -> str | None:
    """Which pid numbers this process sees (containers on one host may share a host name)."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started is None or _start_time(pid) in (None, started)


@dataclass
class Holder:
    """What a claim file says about its holder."""

    unit: str
    owner: str
    host: str
    pid: int
    token: str
    since: str
    lease: float
    heartbeat: float  # seconds since the epoch (the file's modification time)
    pid_start: str | None = None
    pidns: str | None = None

    def stale(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        here = self.host == socket.gethostname() and self.pidns == _pid_namespace()
        if here and not _alive(self.pid, self.pid_start):
            return True
        return now - self.heartbeat > self.lease

    def describe(self) -> str:
        age = max(0.0, time.time() - self.heartbeat)
        return f"pid {self.pid} on {self.host} ({self.owner}) since {self.since}, last heartbeat {age:.0f} s ago"


def read_holder(path: Path) -> Holder | None:
    """The claim at `path`, or None when there is none (or it is being created or removed)."""
    try:
        st = path.stat()
        d = json.loads(path.read_text())
        return Holder(unit=d["unit"], owner=d["owner"], host=d["host"], pid=int(d["pid"]), token=d["token"],
                      since=d["since"], lease=float(d["lease"]), heartbeat=st.st_mtime, pid_start=d.get("pid_start"),
                      pidns=d.get("pidns"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # unreadable: half-written by a writer that died (we never write in place), so stale
        # once its lease passes, as judged by the file's time
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        return Holder(unit=path.stem, owner="?", host="?", pid=-1, token="?", since="?", lease=lease_seconds(),
                      heartbeat=mtime)


def _exclusive_create(path: Path, data: bytes) -> bool:
    """Create `path` with `data` if it does not exist; True when this call created it."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    try:
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):  # no hard links here
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                return True
            # NFS may report an error for a link that was made: the temp file's link count says
            try:
                return tmp.stat().st_nlink == 2
            except OSError:
                raise e from None
    finally:
        tmp.unlink(missing_ok=True)


def _break(path: Path, stale: Holder) -> bool:
    """Remove the stale claim at `path` if it is still `stale`; True when this call removed it.
    Exactly one of several breakers wins: the one that links the claim to a name made of the
    stale token (link is exclusive)."""
    if stale.token == "?":  # unreadable claim: compare by inode instead of token
        marker = path.with_name(f".{path.name}.broken-{int(stale.heartbeat * 1e6)}")
    else:
        marker = path.with_name(f".{path.name}.broken-{stale.token}")
    try:
        os.link(path, marker)
    except FileNotFoundError:
        return False
    except FileExistsError:
        return False  # another process is breaking it
    except OSError:
        # no hard links: rename is atomic, then check what was moved
        try:
            os.replace(path, marker)
        except FileNotFoundError:
            return False
        moved = read_holder(marker)
        if moved is not None and moved.token != stale.token and stale.token != "?":
            _exclusive_create(path, marker.read_bytes())  # a fresh claim was moved: put it back
            marker.unlink(missing_ok=True)
            return False
        marker.unlink(missing_ok=True)
        return True
    try:
        linked = read_holder(marker)
        if linked is None or (stale.token != "?" and linked.token != stale.token):
            return False  # the claim changed hands before the link
        if not linked.stale():
            return False
        path.unlink(missing_ok=True)
        return True
    finally:
        marker.unlink(missing_ok=True)


class Claim:
    """A claim this process holds. A heartbeat thread keeps it fresh and notices if it was lost."""

    def __init__(self, path: Path, token: str, lease: float):
        self.path = path
        self.token = token
        self.lease = lease
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"claim-{path.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(max(0.5, self.lease / 6)):
            self.refresh()

    def refresh(self) -> bool:
        h = read_holder(self.path)
        if h is None or h.token != self.token:
            self.lost = True
            return False
        try:
            os.utime(self.path)
        except OSError:
            self.lost = True
        return not self.lost

    def release(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        h = read_holder(self.path)
        if h is not None and h.token == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def try_acquire(folder: Path, unit: str, lease: float | None = None) -> Claim | Holder:
    """The claim on `unit` in `folder` (taking over a stale one), or the live holder's Holder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{unit}.claim"
    lease = lease_seconds() if lease is None else lease
    token = uuid.uuid4().hex
    pid = os.getpid()
    try:
        owner = getpass.getuser()
    except Exception:
        owner = "?"
    body = json.dumps({"unit": unit, "owner": owner, "host": socket.gethostname(), "pid": pid, "token": token,
                       "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "lease": lease,
                       "pid_start": _start_time(pid), "pidns": _pid_namespace()}).encode()
    for _ in range(20):
        if _exclusive_create(path, body):
            return Claim(path, token, lease)
        h = read_holder(path)
        if h is None:
            continue  # released just now
        if not h.stale():
            return h
        _break(path, h)
        time.sleep(0.01)
    h = read_holder(path)
    return h if h is not None else try_acquire(folder, unit, lease)


def acquire(folder: Path, unit: str, *, wait: bool = True, on_wait: Callable[[Holder], None] | None = None,
            poll: float = 0.2, lease: float | None = None) -> Claim | None:
    """The claim on `unit`, waiting while a live process holds it (`on_wait(holder)` is called
    once when waiting starts); without `wait`, None when it is held."""
    told = False
    while True:
        got = try_acquire(folder, unit, lease)
        if isinstance(got, Claim):
            return got
        if not wait:
            return None
        if not told and on_wait is not None:
            on_wait(got)
            told = True
        time.sleep(poll)


def holders(folder: Path) -> list[Holder]:
    """The claims in `folder` (live or stale)."""
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.glob("*.claim")):
        h = read_holder(p)
        if h is not None:
            out.append(h)
    return out
