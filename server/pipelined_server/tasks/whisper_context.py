"""Whisper's encoder run over the audio it was given plus a margin, instead of a 30 s window padded with silence.

Whisper's encoder always sees 30 s (3,000 mel frames); a live stream decodes windows of a few seconds about
once a second, so most of that work encoded padding. With the window plus an 8 s margin, one tiny.en stream's
CPU per second of audio went from 1.09 s to 0.58 s and its final lag p50 from 3.05 s to 1.33 s
(bench/asr_streaming.py --minutes 1 --streams 1, quiet 2-core machine, same session); per decode, the median
went from 4.49 s to 1.49 s (bench/encoder_margin.py, loaded machine).

Cut right at the audio's end, Whisper hallucinates there: it repeats the last words up to its token limit.
Measured on tiny.en over 53 stream-like windows (the first 0.6-8 s of each shared clip, 0.7 s apart), against
the same window decoded in 30 s: a 2 s margin looped on 6 windows, 3 s on 3, 5 s on 1, 8 s on none (mean
per-window WER 0.07 against the full window, most of it one-word changes). So the stream default is 8 s
(`streaming.encoder_margin_s`): a stream's window is at most `max_window_s` (5 s) plus what arrives during a
decode, so its encoder sees 9-16 s instead of 30. Only calls that ask for it are trimmed: live-stream decodes
ask (streaming/options.py); unary calls keep the 30 s window, so they stay equal to the local pipeline.

The margin reaches the pipeline as the call argument `KWARG`, which `loading.run_batch` takes out before the
pipeline sees it and turns into a thread-local setting around the call; the scheduler's batching key includes
every argument, so trimmed and full-window calls never share a batch. The encoder learns each item's length
from the feature attention mask that the pipeline passes through `generate` (or, where a feature extractor
makes none, from where the padding begins).
"""

from __future__ import annotations

import math
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["KWARG", "audio_frames", "install", "trimmed"]

KWARG = "encoder_margin_s"
# Mel frames per second (hop 160 at 16 kHz); the encoder's second convolution halves the frame count, so a
# trimmed length stays even.
_FRAMES_PER_S = 100
# Trimmed lengths are rounded up to whole seconds: fewer distinct shapes, and batched windows of similar
# lengths cost the same.
_GRID_FRAMES = 100

_state = threading.local()


def install(model: Any) -> None:
    """Lets `model`'s Whisper encoder run trimmed inside `trimmed()` (once; replicas share the model)."""
    encoder = model.model.encoder
    if not hasattr(encoder, "_full_forward"):
        encoder._full_forward = encoder.forward
        encoder.forward = types.MethodType(_forward, encoder)


@contextmanager
def trimmed(margin_s: float | None) -> Iterator[None]:
    """Within this block (on this thread), installed encoders keep `margin_s` after the longest item."""
    previous = getattr(_state, "margin_s", None)
    _state.margin_s = margin_s
    try:
        yield
    finally:
        _state.margin_s = previous


def frames_to_keep(real_frames: int, margin_s: float, full_frames: int) -> int:
    wanted = real_frames + margin_s * _FRAMES_PER_S
    return min(full_frames, max(_GRID_FRAMES, math.ceil(wanted / _GRID_FRAMES) * _GRID_FRAMES))


def audio_frames(features: Any, attention_mask: Any) -> Any:
    """Mel frames of each item that hold audio (a tensor, one per item): from the feature attention mask when
    the feature extractor made one, else from the features, where zero padding is the only stretch with
    every bin at the item's floor (log-mel clamped 8 decades under its peak)."""
    if attention_mask is not None:
        return attention_mask.sum(-1)
    floor = features.amin(dim=(1, 2), keepdim=True)
    audio = (features != floor).any(dim=1)  # (batch, frames): some bin above the floor
    frames = features.shape[-1]
    last = frames - audio.flip(-1).int().argmax(-1)  # one past each item's last audio frame
    return last.where(audio.any(-1), 0)


def _forward(encoder: Any, input_features: Any, attention_mask: Any = None, **kwargs: Any) -> Any:
    margin_s = getattr(_state, "margin_s", None)
    # Word timestamps make `generate` ask every module for its attentions, the encoder's included, but they
    # are read from the decoder's cross-attentions only: the trimmed encoder returns none of its own.
    if margin_s is None or kwargs.get("output_hidden_states"):
        return encoder._full_forward(input_features, attention_mask=attention_mask, **kwargs)
    import torch
    from transformers.modeling_outputs import BaseModelOutput

    full = input_features.shape[-1]
    keep = frames_to_keep(int(audio_frames(input_features, attention_mask).max()), margin_s, full)
    if keep >= full:
        return encoder._full_forward(input_features, attention_mask=attention_mask, **kwargs)
    gelu = torch.nn.functional.gelu
    hidden = gelu(encoder.conv2(gelu(encoder.conv1(input_features[..., :keep])))).permute(0, 2, 1)
    # Through the module, not its weight: under device_map offloading, its hook brings the weight in.
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    hidden = hidden + encoder.embed_positions(positions)
    for layer in encoder.layers:
        out = layer(hidden, None)
        hidden = out[0] if isinstance(out, tuple) else out
    hidden = encoder.layer_norm(hidden)
    return BaseModelOutput(last_hidden_state=hidden) if kwargs.get("return_dict", True) else (hidden,)
