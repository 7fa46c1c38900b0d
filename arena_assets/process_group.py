"""Run a command in its own session and end its whole process tree, not just the direct child.

`accelerate launch` starts its ranks through torchrun, which puts every worker in a session of its own, so
signalling the launcher's process group alone can miss them once the launcher is gone. We therefore track
the tree through /proc (descendants by parent pid, plus everything in the child's session or group, each
remembered by pid and start time so a reused pid is never signalled) and end all of it: SIGTERM, a grace
period, SIGKILL. Not tracked: a process that moves to a session of its own and loses its parent between two
scans (every 2 s while waiting, and at termination). Without /proc (macOS) only the child's process group
is signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from types import TracebackType

_HAS_PROC = os.path.isdir("/proc/self")
_POLL_SECONDS = 0.1
_SCAN_SECONDS = 2.0  # while waiting, how often to record the tree (workers of a launcher that dies later)
_TAIL_BYTES = 64 * 1024


class SessionProcess:
    """A command in a new session; stderr is teed to ours and its tail kept; the tree ends with the block.

    On leaving the `with` block by an exception (KeyboardInterrupt, Dagster's interruption, anything), and
    also after a normal exit for processes the child left behind, the whole tree gets SIGTERM, then
    SIGKILL after `grace_seconds`. The exception then propagates.
    """

    def __init__(self, cmd: Sequence[str], *, env: Mapping[str, str], grace_seconds: float) -> None:
        self.cmd = list(cmd)
        self.grace_seconds = grace_seconds
        self.terminated_pids: set[int] = set()  # got SIGTERM
        self.killed_pids: set[int] = set()  # still alive after the grace period: got SIGKILL
        self._env = dict(env)
        self._members: dict[int, int] = {}  # pid -> start time, every process seen in the tree
        self._tail: deque[bytes] = deque()
        self._tail_size = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._tee: threading.Thread | None = None

    @property
    def pid(self) -> int:
        """Pid of the direct child (also its session and process-group id)."""
        assert self._proc is not None, "use SessionProcess as a context manager"
        return self._proc.pid

    def __enter__(self) -> SessionProcess:
        self._proc = subprocess.Popen(self.cmd, env=self._env, stdin=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, start_new_session=True)
        self._tee = threading.Thread(target=self._pump_stderr, name="child-stderr-tee", daemon=True)
        self._tee.start()
        return self

    def wait(self) -> int:
        """Wait for the direct child's exit code, recording its tree meanwhile."""
        assert self._proc is not None
        while True:
            self._scan()
            try:
                return self._proc.wait(timeout=_SCAN_SECONDS)
            except subprocess.TimeoutExpired:
                continue

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.terminate()
        if self._tee is not None:
            # A survivor we could not see (no /proc) may hold the pipe open; don't wait on it for long.
            self._tee.join(timeout=5.0)

    def terminate(self) -> None:
        """End every live process of the tree: SIGTERM, up to `grace_seconds`, then SIGKILL."""
        try:
            deadline = time.monotonic() + self.grace_seconds
            while self._signal_alive(signal.SIGTERM, self.terminated_pids) and time.monotonic() < deadline:
                time.sleep(_POLL_SECONDS)
        finally:
            # Also reached when a second interruption arrives during the grace period: kill at once.
            for _ in range(50):
                if not self._signal_alive(signal.SIGKILL, self.killed_pids):
                    break
                time.sleep(_POLL_SECONDS)
            if self._proc is not None and self._proc.poll() is None:
                # A process stuck in the kernel (a hung GPU driver call) dies only when that call returns;
                # don't let waiting for it replace the exception that brought us here.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=5.0)

    def stderr_tail(self, lines: int = 50) -> str:
        """The child's last `lines` stderr lines (progress-bar redraws split on carriage returns)."""
        text = b"".join(self._tail).decode(errors="replace").replace("\r", "\n")
        return "\n".join([line for line in text.split("\n") if line.strip()][-lines:])

    def _pump_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        fd = self._proc.stderr.fileno()
        out = getattr(sys.stderr, "buffer", None)
        # Read chunks, not lines, so \r progress bars reach the compute log as they redraw.
        while chunk := os.read(fd, 65536):
            self._tail.append(chunk)
            self._tail_size += len(chunk)
            while self._tail_size > _TAIL_BYTES and len(self._tail) > 1:
                self._tail_size -= len(self._tail.popleft())
            try:
                if out is not None:
                    out.write(chunk)
                else:
                    sys.stderr.write(chunk.decode(errors="replace"))
                sys.stderr.flush()
            except (OSError, ValueError):
                pass  # our stderr is gone; keep draining so the child never blocks on a full pipe
        self._proc.stderr.close()

    def _scan(self) -> None:
        """Add every process of the tree now visible to the remembered members."""
        if not _HAS_PROC or self._proc is None:
            return
        root = self._proc.pid
        table = _proc_table()
        alive = {pid for pid, start in self._members.items() if table.get(pid, (0, 0, 0, -1, ""))[3] == start}
        changed = True
        while changed:
            changed = False
            for pid, (ppid, pgid, sid, start, state) in table.items():
                if pid not in alive and state not in "ZX" and (root in (pgid, sid) or ppid in alive):
                    alive.add(pid)
                    self._members[pid] = start
                    changed = True

    def _signal_alive(self, sig: int, signalled: set[int]) -> bool:
        """Send `sig` to every live member; returns whether any was alive."""
        assert self._proc is not None
        self._proc.poll()  # reap the direct child so it does not linger as a zombie
        if not _HAS_PROC:
            try:
                if not (sig == signal.SIGTERM and self._proc.pid in signalled):
                    os.killpg(self._proc.pid, sig)
                os.killpg(self._proc.pid, 0)
            except ProcessLookupError:
                return False
            signalled.add(self._proc.pid)
            return True
        self._scan()
        table = _proc_table()
        live = [pid for pid, start in self._members.items()
                if pid in table and table[pid][3] == start and table[pid][4] not in "ZX"]
        for pid in live:
            # SIGTERM once per process: a repeat would interrupt torchrun's own shutdown of its workers.
            if sig == signal.SIGTERM and pid in signalled:
                continue
            try:
                os.kill(pid, sig)
                signalled.add(pid)
            except ProcessLookupError:
                pass
        return bool(live)


def process_start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), or None if it has ended (or there is no /proc)."""
    entry = _proc_table(pid).get(pid)
    return entry[3] if entry and entry[4] not in "ZX" else None


def end_session(pid: int, start: int | None, *, grace_seconds: float) -> set[int]:
    """End the process `pid` (when it still has start time `start`), its descendants and every process of
    its session and group: SIGTERM, up to `grace_seconds`, then SIGKILL. Returns the pids signalled.

    For a process tree whose parent is gone (the run that launched it was killed), where no SessionProcess
    is left to end it.
    """
    if not _HAS_PROC or start is None or process_start_time(pid) != start:
        return set()
    table = _proc_table()
    members = {pid: start}
    changed = True
    while changed:
        changed = False
        for other, (ppid, pgid, sid, other_start, state) in table.items():
            if other not in members and state not in "ZX" and (pid in (pgid, sid) or ppid in members):
                members[other] = other_start
                changed = True
    signalled: set[int] = set()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + (grace_seconds if sig == signal.SIGTERM else 5.0)
        while True:
            table = _proc_table()
            live = [p for p, t in members.items()
                    if p in table and table[p][3] == t and table[p][4] not in "ZX"]
            if not live:
                return signalled
            for member in live:
                with contextlib.suppress(ProcessLookupError):
                    if not (sig == signal.SIGTERM and member in signalled):
                        os.kill(member, sig)
                    signalled.add(member)
            if time.monotonic() > deadline:
                break
            time.sleep(_POLL_SECONDS)
    return signalled


def _proc_table(only: int | None = None) -> dict[int, tuple[int, int, int, int, str]]:
    """pid -> (ppid, pgid, sid, start time, state) for every process in /proc (or just `only`)."""
    table = {}
    for entry in [str(only)] if only is not None else os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                raw = handle.read().decode(errors="replace")
        except OSError:
            continue  # exited while we listed
        # The command name may contain spaces and parentheses: split after its closing one.
        fields = raw[raw.rfind(")") + 2:].split()
        table[int(entry)] = (int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]), fields[0])
    return table
