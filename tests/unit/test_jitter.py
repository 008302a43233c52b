"""bridge.store.JITTER, the generator of retry waits and delivery orders: a forked process
(gunicorn's preload_app, `policy plan`'s workers) draws a sequence of its own, not its parent's,
so that siblings never retry in step."""

from __future__ import annotations

from bridge.store import JITTER
from tests.forked import in_a_fork


def _draws() -> str:
    return repr([JITTER.random() for _ in range(4)])


def test_a_forked_process_draws_its_own_jitter():
    child = in_a_fork(_draws)
    assert child and child != _draws()
