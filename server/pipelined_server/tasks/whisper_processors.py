"""Whisper's token-suppressing logits processors with their vocabulary mask built once per generate call.

transformers' `SuppressTokensLogitsProcessor` and `SuppressTokensAtBeginLogitsProcessor` rebuild a
vocabulary-sized mask with `torch.isin(torch.arange(vocab), tokens)` at every decoding step (the second one
even at steps where it changes nothing). With tiny.en's 90 suppressed tokens over 51,864 entries that
`isin` dominates the step: in a py-spy profile of one live tiny.en stream (bench/asr_streaming.py --minutes 1
--streams 1) the two took 6.3% and 1.7% of all server CPU, beside 49% in every Linear layer together. In
bench/whisper_processors.py (one torch thread, this 2-core machine at load 4-5), per step
`SuppressTokensLogitsProcessor` took 2.5 ms for one row and 2.7 ms for four, the same `torch.where` with a
mask made once 0.04 and 0.15 ms (`SuppressTokensAtBegin...`: 0.5 ms at every step, now 0 after the first);
per stream-like decode (53 windows of 0.6-8 s, word timestamps, 8 s encoder margin) the median went from
1,023 to 915 ms and the mean from 1,151 to 1,020 ms (-11%), every text unchanged.

The processors here are the same classes (Whisper's generate finds them by `isinstance` and reads their
`suppress_tokens`) computing the same `torch.where(mask, -inf, scores)` with the same mask, kept per vocabulary
size and device for the processor's life (one generate call): their scores are bit-identical
(tests/server/test_whisper_processors.py). `install` swaps them in per model, where the model builds them
(`_retrieve_logit_processors`), not globally: other models and the local pipeline keep transformers' own.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from transformers.generation.logits_process import (
    SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor,
)

__all__ = ["install"]


def _mask(processor: Any, tokens: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The original's mask (`isin` over the vocabulary), made at the first step and reused after."""
    masks: dict[tuple[int, torch.device], torch.Tensor] = processor.__dict__.setdefault("_masks", {})
    key = (scores.shape[-1], scores.device)
    mask = masks.get(key)
    if mask is None:
        vocab = torch.arange(scores.shape[-1], device=scores.device)
        mask = masks[key] = torch.isin(vocab, tokens.to(scores.device))
    return mask


class SuppressTokens(SuppressTokensLogitsProcessor):
    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        return torch.where(_mask(self, self.suppress_tokens, scores), -float("inf"), scores)


class SuppressTokensAtBegin(SuppressTokensAtBeginLogitsProcessor):
    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] != self.begin_index:
            return scores  # the original returns its input unchanged here too, after building the mask
        return torch.where(_mask(self, self.begin_suppress_tokens, scores), -float("inf"), scores)


_CACHED = {
    SuppressTokensLogitsProcessor: SuppressTokens,
    SuppressTokensAtBeginLogitsProcessor: SuppressTokensAtBegin,
}


def install(model: Any) -> None:
    """Makes `model` (a Whisper for generation) build the processors above instead (once; replicas share it)."""
    if "_retrieve_logit_processors" in vars(model):
        return
    build = model._retrieve_logit_processors

    def retrieve(self: Any, *args: Any, **kwargs: Any) -> Any:
        processors = build(*args, **kwargs)
        for processor in processors or ():
            cached = _CACHED.get(type(processor))
            if cached is not None:
                processor.__class__ = cached
        return processors

    model._retrieve_logit_processors = types.MethodType(retrieve, model)
