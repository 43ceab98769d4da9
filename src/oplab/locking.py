"""One writer at a time: an exclusive lock on a file, held by this process.

The lock is ``flock`` on ``PATH``: the operating system releases it when the
holder exits, however it exits (``kill -9`` included), so a lock left by a dead
process is simply taken over. The holder writes its PID into the file, so that
a refused writer is told who holds it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import OplabError


class FileLock:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def acquire(self, what: str) -> None:
        """Take the lock (nothing if this object holds it), or OplabError naming ``what`` and the
        holder's PID."""
        import fcntl

        if self._fh is not None:
            return
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise OplabError(f"{what}: another oplab process (PID {holder}) is writing it now; wait for it to "
                             f"finish or stop it") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
