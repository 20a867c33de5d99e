"""AlignAtt (Papi et al. 2023; Simul-Whisper, Wang et al. 2024, applies it to Whisper) for a live stream's
interim decodes: a Whisper decode stops before the first token whose cross-attention, summed over the model's alignment heads, peaks in
the last `stop_s` of its audio. That word is not fully heard yet; a later decode, with more audio, hears it.

Why: an interim window ends wherever the microphone is, often inside a word. Encoded with a short margin of
padding after it, Whisper "transcribes" the padding: it repeats the last words up to its token limit, so
the streams needed an 8 s margin (tasks/whisper_context.py), and their encoder ran over 9-16 s for windows
of 1-6 s. With the stop, the repeats (almost) never start. Measured by
bench/encoder_margin.py (`--margins 1 8 --stops 0.5`: tiny.en, 53 stream-like windows of 0.6-8 s of the shared
clips, one torch thread, one run at load 1-2), against the same windows decoded in 30 s: windows whose decode
loops, mean WER, words of the 30 s decode ending 1 s or more before the window's end that are missing, median
decode time:

| encoder input | looping | WER | settled words missed | decode p50 |
|---|---|---|---|---|
| window + 8 s, no stop | 0 | 0.066 | 2 / 377 | 586 ms |
| window + 1 s, no stop | 16 | 18.9 | 4 / 377 | 618 ms |
| window + 1 s, 0.5 s stop | 2 | 0.798 | 9 / 377 | 356 ms |
| the same, with the token budget below | 2 | 0.311 | 9 / 377 | 362 ms |

(The last row is another run, load 2: 608 ms for the 8 s margin there.) The two windows that still loop
are cut by a token budget (`_MAX_TOKENS_PER_S`); a stream's hypothesis drops words placed after its audio,
and only words that end 1 s before the window's end are final from one decode: a loop's words, placed at the
end, are left to agreement with the next decode. So interims run with a 1 s margin and a 0.5 s stop
(`streaming.interim_alignatt_s`, `streaming.interim_encoder_margin_s`); final decodes, which must give every
word, keep the full margin and no stop.

What a stream makes of it (streaming/session.py): a stopped hypothesis lacks the words of its last 0.5 s, so
LocalAgreement alone confirmed them one decode later (one tiny.en stream, final lag p50 2.08 s against
1.70-1.76 s without the stop); its words that end 1 s or more before the window's end are therefore final at
once. Committing every word of one stopped decode (Simul-Whisper's rule, without its forced prefix) made the
streamed WER 0.100 against 0.035 (the re-decodes reword what was committed). Measured A/B, one stream of
1 minute, interleaved (`bench/asr_streaming.py --minutes 1 --streams 1`, load average 3-6): CPU per second
of audio 0.50 and 0.49 against 0.72 and 0.60 without; final lag p50 1.62 and 1.83 s against 1.61 and 1.61 s;
WER against the references 0.035 and 0.041 against 0.029 (one word in 170). With more streams, where the
cheaper interims let admission take more of them (`--streams 4` and `--streams 8`, one run each, load 4):

| streams | stop | refused | final lag p50 / p95 / max | CPU per audio second |
|---|---|---|---|---|
| 4 | none | 2 | 2.27 / 6.68 / 8.85 s | 0.47 |
| 4 | 0.5 s | 1 | 1.86 / 5.73 / 9.31 s | 0.37 |
| 8 | none | 6 | 1.86 / 4.86 / 10.57 s | 0.57 |
| 8 | 0.5 s | 5 | 1.48 / 2.19 / 2.53 s | 0.43 |

The first decoding steps (`_FREE_TOKENS`, counted from the decoder prompt) never stop: while Whisper places its first word its attention often
peaks at the end of the input (at the padding), and a stop there lost whole windows (84 of the 281 words).

Mechanics: forward hooks on the alignment heads' cross-attention layers keep the newest query's weights (the
weights exist: word timestamps already make `generate` run eager attention with attentions on); a logits
processor appended to `generate`'s own reads them at each step and leaves a row only its end-of-text token.
Both act only inside `stopping()` on the calling thread (replicas share the model, each on its own thread), so
unary calls and final decodes are untouched. The setting reaches the pipeline as the call argument `KWARG`,
which `loading.run_batch` takes out; the batching key includes it, so interims and finals never share a batch.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import whisper_context

__all__ = ["KWARG", "after_forced_text", "install", "installed", "stopping"]

KWARG = "alignatt_stop_s"
# Encoder frames per second (mel frames at 100/s, halved by the encoder's second convolution).
_ENCODER_FRAMES_PER_S = 50
# Generated tokens that never stop the decode (see the module docstring).
_FREE_TOKENS = 4
# A row ends after this many tokens per second of its audio (plus the slack): speech read fast (1.4x) gives
# tiny.en about 5 per second, and the rare decode that loops despite the stop (2 of 53 windows in
# bench/encoder_margin.py) would otherwise run to Whisper's 448-token limit.
_MAX_TOKENS_PER_S = 8
_TOKENS_SLACK = 10

_state = threading.local()


def install(model: Any) -> bool:
    """Hooks `model` (a Whisper model with alignment heads) once; False for a model without alignment heads."""
    heads = getattr(getattr(model, "generation_config", None), "alignment_heads", None)
    if not heads:
        return False
    if installed(model):
        return True
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(int(layer), []).append(int(head))
    for layer, layer_heads in by_layer.items():
        model.model.decoder.layers[layer].encoder_attn.register_forward_hook(_capture(layer, layer_heads))
    eos = model.generation_config.eos_token_id
    model.generate = _with_stop(model.generate, eos[0] if isinstance(eos, list) else eos)
    model._pipelined_alignatt = True
    return True


def installed(model: Any) -> bool:
    """Whether `install` hooked `model`: only then may a decode run with a short margin and the stop."""
    return bool(getattr(model, "_pipelined_alignatt", False))


@contextmanager
def stopping(stop_s: float | None) -> Iterator[None]:
    """Within this block (on this thread), installed models stop `stop_s` before their audio's end."""
    previous = getattr(_state, "stop_s", None)
    _state.stop_s = stop_s
    _state.attention = {}
    try:
        yield
    finally:
        _state.stop_s = previous
        _state.attention = {}


@contextmanager
def after_forced_text() -> Iterator[None]:
    """Within this block (on this thread), decodes start after forced words (tasks/whisper_prefix.py): their
    first word is placed already, so the stop applies from the first generated token, not after the free
    ones (which would let 2-4 unheard words past it)."""
    previous = getattr(_state, "forced", False)
    _state.forced = True
    try:
        yield
    finally:
        _state.forced = previous


def _capture(layer: int, heads: list[int]) -> Any:
    def hook(module: Any, args: Any, output: Any) -> None:
        if getattr(_state, "stop_s", None) is None:
            return
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is not None:
            # Per layer, the newest step's only: a decoder pass outside the generation loop (language
            # detection) leaves weights that the loop's next step overwrites.
            _state.attention[layer] = weights[:, heads, -1, :].sum(1)  # (batch, encoder frames)

    return hook


def _with_stop(generate: Any, eos_token_id: int) -> Any:
    @functools.wraps(generate)
    def generate_with_stop(*args: Any, **kwargs: Any) -> Any:
        stop_s = getattr(_state, "stop_s", None)
        features = kwargs.get("input_features", args[0] if args else None)
        if stop_s is None or features is None:
            return generate(*args, **kwargs)
        from transformers import LogitsProcessorList

        # Encoder frames that hold audio, per item: the stop is measured from each item's own end.
        frames = whisper_context.audio_frames(features, kwargs.get("attention_mask")) // 2
        processors = LogitsProcessorList(kwargs.get("logits_processor") or [])
        processors.append(_stop_processor(frames, round(stop_s * _ENCODER_FRAMES_PER_S), eos_token_id))
        kwargs["logits_processor"] = processors
        _state.attention = {}
        return generate(*args, **kwargs)

    return generate_with_stop


def _stop_processor(frames: Any, stop_frames: int, eos_token_id: int) -> Any:
    from transformers import LogitsProcessor

    budget = frames * _MAX_TOKENS_PER_S // _ENCODER_FRAMES_PER_S + _TOKENS_SLACK
    free = 0 if getattr(_state, "forced", False) else _FREE_TOKENS

    class StopNearAudioEnd(LogitsProcessor):
        """Leaves only end-of-text to the rows whose newest token looks at their audio's last frames, or that
        generated more tokens than their audio could hold."""

        def __init__(self) -> None:
            self.prompt_length: int | None = None

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            layers, _state.attention = getattr(_state, "attention", None) or {}, {}
            length = input_ids.shape[1]
            if self.prompt_length is None or length < self.prompt_length:
                self.prompt_length = length  # the first step (again after a temperature fallback)
            generated = length - self.prompt_length
            if generated < free:
                return scores
            over = (generated >= budget).to(scores.device)
            if layers:
                attention = sum(layers.values())
                stop = (attention.argmax(-1) >= frames.to(attention.device) - stop_frames) | over
            else:
                stop = over
            if bool(stop.any()):
                scores = scores.clone()
                scores[stop] = float("-inf")
                scores[stop, eos_token_id] = 0.0
            return scores

    return StopNearAudioEnd()
