"""Process plumbing for the real test environment.

Every service is started by us, remembered by its own PID and stopped by that
PID only (never by name), so parallel test runs and the developer's own
daemons are never touched.  Optional network namespaces let dockerd and the
services it must reach live on a loopback of their own.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Mapping, Sequence, TypeVar

T = TypeVar("T")

STOP_TIMEOUT = 15.0
"""Seconds a service gets to exit after SIGTERM before it is SIGKILLed."""

UNIX_PATH_MAX = 100
"""sun_path is 108 bytes; keep a margin so daemons can add suffixes."""

# Debian package that provides each external tool, for actionable errors.
_PACKAGES: dict[str, str] = {
    "docker-registry": "docker-registry",
    "notary": "notary",
    "notary-server": "notary",
    "skopeo": "skopeo",
    "umoci": "umoci",
    "dockerd": "docker.io",
    "docker": "docker.io",
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "podman": "podman",
    "openssl": "openssl",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "ip": "iproute2",
    "sleep": "coreutils",
}


class MissingComponent(Exception):
    """A tool the real environment needs is not installed."""


class CommandError(RuntimeError):
    """A helper command failed; the message carries its output."""


def require_tool(name: str) -> str:
    """Return the absolute path of executable *name* or explain how to get it."""
    path = shutil.which(name)
    if path:
        return path
    package = _PACKAGES.get(name, name)
    raise MissingComponent(
        f"required tool {name!r} not found on PATH; install the Debian package "
        f"{package!r} (apt-get install --no-install-recommends {package})"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for a currently unused TCP port on *host*."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 40) -> str:
    """Last *lines* of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _children(pid: int) -> list[int]:
    """Direct children of *pid* according to /proc."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # field 4 (ppid) follows the parenthesised comm, which may contain spaces
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    """All descendants of *pid* (children first), read from /proc."""
    result: list[int] = []
    queue = [pid]
    while queue:
        kids = _children(queue.pop())
        result.extend(kids)
        queue.extend(kids)
    return result


@dataclass
class Service:
    """A long-running process we started, identified by its own PID."""

    name: str
    argv: list[str]
    pid: int
    log_path: Path
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        """True while the process has not exited (reaps it if it has)."""
        if self._popen is None:
            return False
        return self._popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of this service's log."""
        return log_tail(self.log_path, lines)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM our PID, wait, then SIGKILL it and its leftovers; idempotent."""
        proc = self._popen
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_tree(proc)
        self._popen = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _kill_tree(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the process and the children it spawned (only ours)."""
        leftovers = descendants(proc.pid)
        proc.kill()
        proc.wait()
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def start_service(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Service:
    """Start *argv* in its own session with stdout+stderr to *log_path*.

    A new session keeps a Ctrl-C on the terminal from reaching the daemons
    directly, so they are stopped in order by whoever owns the Service.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "ab")
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    except BaseException:
        log_file.close()
        raise
    return Service(name, list(argv), proc.pid, log_path, proc, log_file)


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    service: Service | None = None,
    what: str = "condition",
    interval: float = 0.1,
) -> None:
    """Poll *check* until true; fail fast with the log if *service* dies.

    Exceptions from *check* count as "not yet" (a port not listening yet
    raises ConnectionRefusedError, for instance).
    """
    name = service.name if service else what
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        if service is not None and not service.running:
            raise RuntimeError(f"{name} exited before becoming ready; log tail:\n{service.log_tail()}")
        if time.monotonic() >= deadline:
            tail = f"; log tail:\n{service.log_tail()}" if service else ""
            raise RuntimeError(f"{name}: {what} not reached within {timeout:g}s{tail}")
        time.sleep(interval)


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    netns: NetNS | None = None,
    check: bool = True,
    timeout: float = 180.0,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a short command (optionally inside *netns*) and capture its output.

    *input_text* is its standard input (for a prompt); otherwise it reads nothing.

    On failure the raised CommandError includes stdout/stderr, which
    CalledProcessError would hide.
    """
    full = netns.wrap(argv) if netns is not None else list(argv)
    result = subprocess.run(
        full,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=None if input_text is not None else subprocess.DEVNULL,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise CommandError(
            f"command failed (exit {result.returncode}): {' '.join(full)}\n"
            f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
        )
    return result


def clean_env(drop_prefixes: Sequence[str] = (), **extra: str) -> dict[str, str]:
    """os.environ without variables that could point tools elsewhere, plus *extra*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(tuple(drop_prefixes))}
    env.update(extra)
    return env


def short_dir(preferred: Path, reserve: int, prefix: str) -> tuple[Path, bool]:
    """*preferred* if unix sockets of *reserve* more chars fit below it, else a /tmp dir.

    Returns (directory, is_temporary); the caller removes temporary ones.
    """
    if len(str(preferred)) + reserve <= UNIX_PATH_MAX:
        preferred.mkdir(parents=True, exist_ok=True)
        return preferred, False
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp")), True


def unmount_under(root: Path) -> None:
    """Unmount anything still mounted below *root* (deepest first)."""
    prefix = str(root.resolve()).rstrip("/") + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)


# ---------------------------------------------------------------------------
# network namespaces
# ---------------------------------------------------------------------------

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class NetNS:
    """A fresh network namespace with only loopback up.

    It is pinned by a tiny holder process (``unshare -n ... sleep``), so
    services can be started into it in any order and it lives until stop().
    Use ``wrap(argv)`` to run/start a command inside it, and ``call(fn)`` to
    run Python code (e.g. urllib requests) with sockets created inside it.
    Unix sockets and files are shared with the host, so docker/ctr CLIs
    talking over a unix socket work from anywhere.
    """

    holder: Service

    @property
    def path(self) -> str:
        """The /proc path that identifies the namespace."""
        return f"/proc/{self.holder.pid}/ns/net"

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """argv prefixed with nsenter; nsenter execs, so the PID stays the command's."""
        return [require_tool("nsenter"), f"--net={self.path}", "--", *argv]

    def call(self, fn: Callable[[], T]) -> T:
        """Run *fn* in a helper thread that joined the namespace (setns is per thread)."""
        box: dict[str, object] = {}

        def target() -> None:
            try:
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    if _libc.setns(fd, _CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns({self.path}): {os.strerror(err)}")
                finally:
                    os.close(fd)
                box["value"] = fn()
            except BaseException as exc:  # re-raised in the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=target, name="netns-call", daemon=True)
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["value"]  # type: ignore[return-value]

    def stop(self) -> None:
        """Stop the holder; the namespace disappears with its last process."""
        self.holder.stop()


def start_netns(workdir: Path, name: str = "netns") -> NetNS:
    """Create a network namespace with loopback up, pinned by a holder process."""
    script = "ip link set lo up && echo ready && exec sleep infinity"
    argv = [require_tool("unshare"), "-n", "sh", "-c", script]
    require_tool("ip")
    log = workdir / f"{name}.log"
    holder = start_service(name, argv, log)
    try:
        wait_until(lambda: "ready" in log.read_text(), 10, holder, "loopback up")
    except BaseException:
        holder.stop()
        raise
    return NetNS(holder)


def in_netns(netns: NetNS | None, fn: Callable[[], T]) -> T:
    """Call *fn* in *netns*, or directly when there is none."""
    return fn() if netns is None else netns.call(fn)
