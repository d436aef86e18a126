"""Every process one demo run starts, and the guarantee that all of them end with it.

Daemons and one-shot commands alike are `pm` subprocesses in their own sessions (so a Ctrl-C at
the terminal reaches only `pm demo`, which then stops them in order: clients, daemons, the chain).
`close()` runs in a `finally`: after a failure, a Ctrl-C or a SIGTERM nothing is left running and
no port stays taken, so the next run starts clean. Only a SIGKILL of `pm demo` itself skips that
`finally`; for that case every child is recorded in <out>/pids, and the next run into the same
folder stops whatever of them is still running (`stop_leftovers`) before it replaces the folder.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from offchain.demo.anvil import Anvil
from offchain.errors import UserError
from offchain.swarm.local import LocalProcess, spawn_pm


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def stop_leftovers(pid_file: Path) -> None:
    """SIGKILL the process group of every recorded child that still runs the same command line."""
    if not pid_file.is_file():
        return
    for line in pid_file.read_text().splitlines():
        pid, cmdline = line.split("\t")
        if _cmdline(int(pid)) == bytes.fromhex(cmdline):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGKILL)


class Fleet:
    def __init__(self, log_dir: Path, pid_file: Path, echo: Callable[[str], None]) -> None:
        self.log_dir = log_dir
        self.pid_file = pid_file
        self.echo = echo
        self.anvil: Anvil | None = None
        self.daemons: list[LocalProcess] = []
        self.commands: list[LocalProcess] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def _record(self, popen: subprocess.Popen) -> None:
        """The pid and the command line it runs (as /proc shows it once the child has exec'd)."""
        cmdline = b"".join(os.fsencode(arg) + b"\0" for arg in popen.args)
        with open(self.pid_file, "a") as pids:
            pids.write(f"{popen.pid}\t{cmdline.hex()}\n")

    def adopt_anvil(self, anvil: Anvil) -> None:
        self.anvil = anvil
        self._record(anvil.process)

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> LocalProcess:
        """Start a daemon (`pm <args>`, `env` added to ours), stderr in <log_dir>/<name>.log."""
        shown = "".join(f"{key}={value} " for key, value in (env or {}).items())
        self.echo(f"$ {shown}pm {shlex.join(args)}")
        process = spawn_pm(name, args, self.log_dir, env=env)
        self._record(process.popen)
        self.daemons.append(process)
        return process

    def launch(self, name: str, args: list[str]) -> tuple[LocalProcess, Path]:
        """Start a one-shot command whose stdout goes to <log_dir>/<name>.out; see `result`."""
        self.echo(f"$ pm {shlex.join(args)}")
        stdout = self.log_dir / f"{name}.out"
        process = spawn_pm(name, args, self.log_dir, stdout=stdout)
        self._record(process.popen)
        self.commands.append(process)
        return process, stdout

    def result(self, process: LocalProcess, stdout: Path, timeout_s: float, tick: Callable[[], None]) -> str:
        """Wait for a one-shot command, calling `tick` meanwhile; its stdout, or an error with its log."""
        deadline = time.monotonic() + timeout_s
        while process.popen.poll() is None:
            if time.monotonic() > deadline:
                process.stop()
                raise UserError(f"{process.name} did not finish within {timeout_s:.0f}s (log: {process.log})")
            tick()
            time.sleep(0.3)
        self.commands.remove(process)
        if process.popen.returncode != 0:
            tail = process.text().strip().splitlines()[-1:] or ["(no output)"]
            raise UserError(
                f"{process.name} failed (exit {process.popen.returncode}): {tail[0]} (log: {process.log})"
            )
        return stdout.read_text()

    def run(
        self, name: str, args: list[str], timeout_s: float = 180, tick: Callable[[], None] = lambda: None
    ) -> str:
        process, stdout = self.launch(name, args)
        return self.result(process, stdout, timeout_s, tick)

    def close(self) -> None:
        """Stop every command and daemon (SIGTERM to all at once: each finishes its current step on
        its own, so they shut down side by side), then the chain they used. Never raises."""
        with deferred_signals():
            processes = [*reversed(self.commands), *reversed(self.daemons)]
            for process in processes:
                with contextlib.suppress(Exception):
                    if process.popen.poll() is None:
                        process.popen.send_signal(signal.SIGTERM)
            for process in processes:
                with contextlib.suppress(Exception):
                    process.stop(timeout=15)
            if self.anvil is not None:
                with contextlib.suppress(Exception):
                    self.anvil.stop()


@contextlib.contextmanager
def _signal_handlers(handlers: dict[signal.Signals, Any]) -> Iterator[None]:
    """Install `handlers` for the block, then put back the ones they replaced."""
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def deferred_signals() -> contextlib.AbstractContextManager[None]:
    """A second Ctrl-C while cleaning up must not abandon the processes not yet stopped."""
    return _signal_handlers({signal.SIGINT: signal.SIG_IGN, signal.SIGTERM: signal.SIG_IGN})


def interrupt_on_signals() -> contextlib.AbstractContextManager[None]:
    """SIGTERM (e.g. `kill`, a CI timeout) unwinds like Ctrl-C, so every `finally` runs. SIGINT is
    set to raise KeyboardInterrupt too: a background job of a non-interactive shell (`pm demo &` in
    a script) starts with SIGINT ignored, and Python then leaves it ignored, so `kill -INT` would
    do nothing."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    return _signal_handlers({signal.SIGTERM: interrupt, signal.SIGINT: signal.default_int_handler})
