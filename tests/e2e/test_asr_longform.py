"""The quiet cut of streamed long-form decoding for models without timestamps (CTC)."""

from __future__ import annotations

import numpy as np
from pipelined_server.tasks.asr_longform import quiet_cut


def test_quiet_cut_lands_in_the_pause() -> None:
    rate = 1000
    audio = np.ones(60 * rate, np.float32)
    audio[27_000:27_400] = 0.0
    cut = quiet_cut(audio, 0, 30 * rate, rate)
    assert 27_000 <= cut <= 27_400
    assert quiet_cut(audio, 40 * rate, 30 * rate, rate) == len(audio)
