"""A server-wide budget of bytes held at once (decoded request payloads), shared by every call.

A call reserves what it will decode before decoding it and gives it back when it answers; a call that
would take the server over the budget answers RESOURCE_EXHAUSTED at once (retry later), as a full queue
does, instead of growing the process until the kernel kills it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextvars import ContextVar

from .errors import QueueFull


class ByteBudget:
    """Thread-safe: reservations are taken on decoding threads and returned on the event loop."""

    def __init__(self, capacity: int, what: str) -> None:
        self.capacity = capacity
        self.what = what
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def take(self, nbytes: int) -> None:
        with self._lock:
            if self._used + nbytes > self.capacity:
                raise QueueFull(
                    f"the server holds {self._used} bytes of decoded {self.what} and this call needs {nbytes} "
                    f"more (limit {self.capacity}); retry later"
                )
            self._used += nbytes

    def give_back(self, nbytes: int) -> None:
        with self._lock:
            self._used = max(0, self._used - nbytes)


class Reservation:
    """What one call holds of a budget; `close()` returns all of it."""

    def __init__(self, budget: ByteBudget) -> None:
        self._budget = budget
        self.held = 0

    def take(self, nbytes: int) -> None:
        self._budget.take(nbytes)
        self.held += nbytes

    def close(self) -> None:
        self._budget.give_back(self.held)
        self.held = 0


# The reservation of the call being served: set around each unary call (services/unary.py), read where the
# call's inputs are decoded (asyncio.to_thread carries the context to the decoding thread).
_CURRENT: ContextVar[Reservation | None] = ContextVar("reservation", default=None)


@contextlib.contextmanager
def holding(budget: ByteBudget) -> Iterator[None]:
    """What the call inside reserves is taken from `budget` and given back when the call answers."""
    reservation = Reservation(budget)
    token = _CURRENT.set(reservation)
    try:
        yield
    finally:
        _CURRENT.reset(token)
        reservation.close()


def current_reservation() -> Reservation | None:
    return _CURRENT.get()
