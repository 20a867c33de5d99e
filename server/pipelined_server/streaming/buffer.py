"""The stream's recent audio at the model's rate, addressed by absolute sample index from the stream's start.

Only the audio an open utterance may still decode (plus a little pre-roll) is kept; `trim` drops the rest,
so a stream of any length holds a bounded buffer. Arrival times of the chunks are kept alongside, to
measure latency from the moment audio arrived.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np


class RollingBuffer:
    def __init__(self) -> None:
        self._data = np.zeros(0, dtype=np.float32)
        # Absolute index of self._data[0].
        self.start = 0
        # (absolute end index of a chunk, time.monotonic() when it arrived), oldest first.
        self._arrivals: deque[tuple[int, float]] = deque()

    @property
    def end(self) -> int:
        """Absolute index one past the newest sample."""
        return self.start + len(self._data)

    def append(self, samples: np.ndarray, arrived: float | None = None) -> None:
        if len(samples) == 0:
            return
        self._data = np.concatenate([self._data, samples.astype(np.float32, copy=False)])
        self._arrivals.append((self.end, time.monotonic() if arrived is None else arrived))

    def slice(self, start: int, end: int) -> np.ndarray:
        """Samples [start, end) clamped to what is held; a copy, safe to hand to another thread."""
        lo = max(start, self.start) - self.start
        hi = max(lo, min(end, self.end) - self.start)
        return self._data[lo:hi].copy()

    def arrival_of(self, index: int) -> float:
        """When the chunk holding sample `index - 1` (the end of a span ending at `index`) arrived."""
        for end, arrived in self._arrivals:
            if end >= index:
                return arrived
        return self._arrivals[-1][1] if self._arrivals else time.monotonic()

    def trim(self, keep_from: int) -> None:
        """Forgets the samples before `keep_from`."""
        cut = min(max(keep_from, self.start), self.end) - self.start
        if cut > 0:
            self._data = self._data[cut:]
            self.start += cut
        while len(self._arrivals) > 1 and self._arrivals[0][0] <= self.start:
            self._arrivals.popleft()

    @property
    def held(self) -> int:
        return len(self._data)
