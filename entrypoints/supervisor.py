"""`waypost serve --workers N`: N server processes on one address, supervised.

The supervisor (the process the operator started) has done the one-time work already
(`cli._preflight`: migrations, the first platform key printed once). It binds the
listening socket itself and starts N worker processes (spawned: fresh interpreters,
nothing inherited but the settings and the socket), each a complete `waypost serve`
on that socket; the kernel spreads connections among them.

- SIGTERM or SIGINT: each worker is told (SIGTERM), stops accepting, finishes what it
  serves within `http.shutdown_grace_seconds` and exits; the supervisor waits for all
  of them and exits 0 when all did. Workers run in a process group of their own, so a
  Ctrl-C at a terminal reaches the supervisor only, which tells them once.
- A worker that dies is started again (its requests in flight are lost, as with any
  crash: Idempotency-Key makes their retries safe), unless it died while starting
  (a refused start is not retried forever: the supervisor stops all and exits 3).
- A worker whose supervisor is gone (killed) stops by itself within a second.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Final

from entrypoints import logs
from entrypoints.settings import Settings

__all__ = ["supervise"]

log = logging.getLogger("waypost.supervisor")

#: A worker that exits sooner than this after its start did not start: not restarted.
START_SECONDS: Final = 10.0
#: Seconds a worker may take beyond the graceful-stop grace before it is killed.
STOP_MARGIN: Final = 10.0
_CONTEXT = multiprocessing.get_context("spawn")


def bind(host: str, port: int) -> socket.socket:
    """The listening socket every worker accepts on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


def _worker(settings: Settings, host: str, port: int, sock: socket.socket, parent: int) -> None:
    """A worker process: one server on the supervisor's socket."""
    os.setpgid(0, 0)  # a terminal's Ctrl-C goes to the supervisor, which tells us once
    logs.configure(settings.log)
    threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()
    from entrypoints.cli import serve_one  # noqa: PLC0415 - the cli imports this module

    raise SystemExit(serve_one(settings, host, port, sockets=[sock]))


def _orphan_watch(parent: int) -> None:
    """Stop gracefully when the supervisor is gone (killed: nobody else would)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


class _Workers:
    def __init__(self, settings: Settings, host: str, port: int, sock: socket.socket) -> None:
        self.settings, self.host, self.port, self.sock = settings, host, port, sock
        self.running: dict[int, tuple[BaseProcess, float]] = {}  # slot -> process, start
        self.stopping = False

    def start(self, slot: int) -> None:
        process = _CONTEXT.Process(
            target=_worker,
            args=(self.settings, self.host, self.port, self.sock, os.getpid()),
            name=f"waypost-worker-{slot}",
        )
        process.start()
        self.running[slot] = (process, time.monotonic())
        log.info("started worker %d (pid %s)", slot, process.pid)

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        for process, _started in self.running.values():
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    def told_to_stop(self) -> bool:
        """(A signal handler sets `stopping` at any moment.)"""
        return self.stopping

    def watch(self) -> int:
        """Restart workers that die, until told to stop; then the exit code."""
        while not self.told_to_stop():
            sentinels = {p.sentinel: slot for slot, (p, _) in self.running.items()}
            for ready in wait(list(sentinels), timeout=0.5):
                slot = sentinels[ready]  # type: ignore[index]
                process, started = self.running[slot]
                process.join()
                if self.told_to_stop():
                    break
                if time.monotonic() - started < START_SECONDS:
                    log.error(
                        "worker %d exited %s while starting; stopping every worker",
                        slot,
                        process.exitcode,
                    )
                    self.stop()
                    self.join()
                    return 3
                log.warning("worker %d died (exit %s); starting another", slot, process.exitcode)
                self.start(slot)
        return self.join()

    def join(self) -> int:
        deadline = time.monotonic() + self.settings.http.shutdown_grace_seconds + STOP_MARGIN
        code = 0
        for process, _started in self.running.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker pid %s did not stop in time: killed", process.pid)
                process.kill()
                process.join()
                code = 1
            elif process.exitcode not in (0, None):
                code = max(code, 1)
        return code


def supervise(settings: Settings, host: str, port: int, workers: int) -> int:
    """Run `workers` server processes on `host:port` until SIGTERM or SIGINT."""
    sock = bind(host, port)
    pool = _Workers(settings, host, port, sock)

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: stopping %d workers gracefully", signal.Signals(signum).name, workers)
        pool.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("serving on %s:%d with %d worker processes", host, port, workers)
    try:
        for slot in range(workers):
            pool.start(slot)
        code = pool.watch()
    finally:
        sock.close()
    log.info("every worker stopped")
    return code
