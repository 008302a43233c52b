"""bridge.store.JITTER, the generator of retry waits and delivery orders: a forked process
(gunicorn's preload_app, `policy plan`'s workers) draws a sequence of its own, not its parent's,
so that siblings never retry in step."""

from __future__ import annotations

import os

from bridge.store import JITTER


def test_a_forked_process_draws_its_own_jitter():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next draws, to the parent
        try:
            os.write(write, repr([JITTER.random() for _ in range(4)]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    parent = repr([JITTER.random() for _ in range(4)])
    assert child and child != parent
