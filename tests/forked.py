"""Run a piece of a test in a forked copy of the test's process, and read back what it says."""

from __future__ import annotations

import os
from collections.abc import Callable


def in_a_fork(work: Callable[[], str]) -> str:
    """`work()`'s text, as a child forked from this process returned it ('' if it failed); the
    child ends at once (os._exit: no atexit, no flush, nothing of the parent's closed)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, work().encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        said = pipe.read()
    os.waitpid(pid, 0)
    return said
