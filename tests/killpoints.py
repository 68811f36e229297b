"""Pace a writer by the points it signals, so a test never depends on the machine's speed.

A ``Stepper`` stands in for the ``os`` module of the code under test (``nvhook.fileops``,
``nvhook.audit``): before each file syscall it names the call on a pipe and blocks until the
test answers. The test can then SIGKILL the writer at exactly that point (before, during or
after the replace), or let it go on. ``os.write`` is split into short writes of at most
``chunk`` bytes, which POSIX allows and the writers must loop over; that gives kill points
inside one file's bytes. Nothing here measures time.

Run as a script, it is the real hook (``nvhook.entry.main``) with the stepper installed:
    python killpoints.py REPORT_FD GO_FD MODULES CHUNK NOFLOCK -- nvhook-args...
"""

from __future__ import annotations

import fcntl
import importlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

WRAPPED = ("open", "write", "fsync", "close", "replace", "rename", "fchmod", "fchown",
           "ftruncate", "unlink")
DONE = "done"  # the last point: the writer returned


class Stepper:
    """An ``os`` look-alike: file syscalls report first and wait for a go."""

    def __init__(self, report_fd: int, go_fd: int, chunk: int) -> None:
        self._report, self._go, self._chunk = report_fd, go_fd, chunk

    def point(self, label: str) -> None:
        os.write(self._report, label.encode() + b"\n")
        if os.read(self._go, 1) != b"g":  # the test went away: stop here
            os._exit(99)

    def __getattr__(self, name: str) -> Any:
        real = getattr(os, name)
        if name not in WRAPPED:
            return real

        def call(*args: Any, **kw: Any) -> Any:
            self.point(name)
            if name == "write" and self._chunk:
                fd, data = args
                return real(fd, memoryview(data)[: self._chunk])
            return real(*args, **kw)

        return call


class NoFlock:
    """``fcntl`` with ``flock`` removed: the mutant of the audit log's lock."""

    def __getattr__(self, name: str) -> Any:
        if name == "flock":
            return lambda fd, op: None
        return getattr(fcntl, name)


class ReportingFlock:
    """``fcntl`` whose ``flock`` says "lock-busy" before it blocks on a held lock."""

    def __init__(self, stepper: Stepper) -> None:
        self._stepper = stepper

    def __getattr__(self, name: str) -> Any:
        if name != "flock":
            return getattr(fcntl, name)

        def flock(fd: int, op: int) -> None:
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
            except BlockingIOError:
                self._stepper.point("lock-busy")
                fcntl.flock(fd, op)

        return flock


def install(stepper: Stepper, modules: Sequence[str], *, noflock: bool = False) -> None:
    for name in modules:
        module: ModuleType = importlib.import_module(name)
        module.os = stepper  # type: ignore[attr-defined]
        if hasattr(module, "fcntl"):
            module.fcntl = NoFlock() if noflock else ReportingFlock(stepper)  # type: ignore[attr-defined]


@dataclass
class Run:
    """What one paced run did: the points passed, where it stopped, how it ended."""

    points: list[str]
    killed_at: str | None
    status: int


class Paced:
    """One paced writer process: ``spawn(report_fd, go_fd)`` starts it and returns a waiter."""

    def __init__(self, spawn: Callable[[int, int], Callable[[], int]]) -> None:
        report_r, report_w = os.pipe()
        go_r, go_w = os.pipe()
        self._wait = spawn(report_w, go_r)
        os.close(report_w)
        os.close(go_r)
        self._report = os.fdopen(report_r, "rb")
        self._go = go_w
        self.points: list[str] = []
        self.pid: int | None = None
        self.waiting = False  # the writer waits at its last point for a go

    def next_point(self) -> str | None:
        """The point the writer now waits at, or None when it has exited."""
        line = self._report.readline()
        if not line:
            return None
        self.points.append(line.decode().strip())
        self.waiting = True
        return self.points[-1]

    def go(self) -> None:
        self.waiting = False
        os.write(self._go, b"g")

    def run_until(self, stop: Callable[[int, str], bool]) -> str | None:
        """Let the writer pass points until ``stop(index, label)``; -> that label or None."""
        while (label := self.next_point()) is not None:
            if stop(len(self.points) - 1, label):
                return label
            self.go()
        return None

    def finish(self, kill: bool = False) -> int:
        if kill:
            assert self.pid is not None
            os.kill(self.pid, signal.SIGKILL)
        else:
            if self.waiting:
                self.go()
            self.run_until(lambda _i, _label: False)
        os.close(self._go)
        status = self._wait()
        self._report.close()
        return status


def fork_writer(target: Callable[[], None], modules: Sequence[str], chunk: int) -> Paced:
    """Fork a child that installs the stepper and runs ``target`` (never returns to pytest)."""
    box: dict[str, int] = {}

    def spawn(report_w: int, go_r: int) -> Callable[[], int]:
        pid = os.fork()
        if pid == 0:
            try:
                stepper = Stepper(report_w, go_r, chunk)
                install(stepper, modules)
                target()
                stepper.point(DONE)
            finally:
                os._exit(0)
        box["pid"] = pid
        return lambda: os.waitpid(pid, 0)[1]

    paced = Paced(spawn)
    paced.pid = box["pid"]
    return paced


def kill_at(paced: Paced, index: int) -> Run:
    """SIGKILL the writer while it waits at point ``index`` (or let it finish if it has fewer)."""
    label = paced.run_until(lambda i, _label: i == index)
    status = paced.finish(kill=label is not None)
    return Run(paced.points, label, status)


def spawn_hook(args: Sequence[str], env: dict[str, str], stdin: Path, modules: Sequence[str],
               chunk: int, *, noflock: bool = False) -> Paced:
    """The real hook (``nvhook.entry.main``) in its own process, with the stepper installed."""
    box: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(report_w: int, go_r: int) -> Callable[[], int]:
        with open(stdin, "rb") as f:
            proc = subprocess.Popen(
                [sys.executable, __file__, str(report_w), str(go_r), ",".join(modules),
                 str(chunk), "1" if noflock else "0", "--", *args],
                stdin=f, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                pass_fds=(report_w, go_r))
        box["proc"] = proc

        def wait() -> int:
            assert proc.stderr is not None
            err = proc.stderr.read()
            proc.wait()
            if b"Traceback" in err:
                raise AssertionError(err.decode(errors="replace"))
            return proc.returncode

        return wait

    paced = Paced(spawn)
    paced.pid = box["proc"].pid
    return paced


def _main(argv: list[str]) -> None:
    report_fd, go_fd, modules, chunk, noflock, sep, *rest = argv
    assert sep == "--"
    stepper = Stepper(int(report_fd), int(go_fd), int(chunk))
    install(stepper, [m for m in modules.split(",") if m], noflock=noflock == "1")
    sys.argv = ["nvhook", *rest]
    stepper.point("start")
    from nvhook import entry

    # The hook leaves through os._exit (entry.leave), past any finally here: the last point
    # is passed on the way out.
    real_exit = os._exit

    def exit_done(status: int) -> NoReturn:
        stepper.point(DONE)
        real_exit(status)

    os._exit = exit_done
    try:
        entry.main()
    finally:
        stepper.point(DONE)


if __name__ == "__main__":
    _main(sys.argv[1:])
