"""SHA-256 on a worker thread, so that hashing a blob overlaps with relaying it.

hashlib lets go of the GIL while it hashes a large piece, so one thread can
hash while the event loop moves the next piece: the two together run at about
the speed of the slower one, not the sum of both. One thread serves every
stream of the process, in the order pieces arrive, which keeps each stream's
pieces in order. Small pieces are hashed in place when nothing of their stream
is waiting, where the hand-over would cost more than the hashing.
"""

import asyncio
import hashlib
import queue
import threading
from collections import deque

THREAD_MIN = 256 << 10
_Job = tuple["hashlib._Hash", bytes | bytearray, asyncio.AbstractEventLoop, "asyncio.Future[None]"]
_jobs: "queue.SimpleQueue[_Job]" = queue.SimpleQueue()
_started = threading.Lock()
_worker: threading.Thread | None = None


def _work() -> None:
    while True:
        hasher, piece, loop, done = _jobs.get()
        hasher.update(piece)
        try:
            loop.call_soon_threadsafe(_settle, done)
        except RuntimeError:  # the loop has closed: nobody waits for this stream any more
            pass


def _settle(done: "asyncio.Future[None]") -> None:
    if not done.done():  # a stream that was given up cancels what it waited for
        done.set_result(None)


def _ensure_worker() -> None:
    global _worker
    if _worker is not None:  # the common case, without the lock
        return
    with _started:
        if _worker is None:
            _worker = threading.Thread(target=_work, name="pullgate-sha256", daemon=True)
            _worker.start()


class StreamDigest:
    """The SHA-256 of one stream, fed piece by piece; at most ``ahead`` pieces wait to be hashed.

    A fed piece must not change afterwards: the worker reads it later.
    """

    def __init__(self, ahead: int = 2) -> None:
        self._hasher = hashlib.sha256()
        self._ahead = ahead
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def update(self, piece: bytes | bytearray) -> None:
        """Queue ``piece``; waits only while ``ahead`` pieces of this stream are still waiting."""
        while self._waiting and self._waiting[0].done():
            self._waiting.popleft()
        if not self._waiting and len(piece) < THREAD_MIN:
            self._hasher.update(piece)
            return
        if len(self._waiting) >= self._ahead:
            await self._waiting.popleft()
        _ensure_worker()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        _jobs.put((self._hasher, piece, loop, done))
        self._waiting.append(done)

    async def hexdigest(self) -> str:
        """The digest of everything fed, once the worker has hashed it all."""
        while self._waiting:
            await self._waiting.popleft()
        return self._hasher.hexdigest()
