"""Whisper's vocabulary projection at each decoding step in int8, its candidates scored again in float32.

Why: the largest single product of a small Whisper model's decoding step is its last, the hidden state times
the output embeddings (51,864 x 384 float32 for tiny.en: 80 MB, read in full at every step, so the step is
bound by memory bandwidth, not arithmetic). On this 2-core AVX2 machine, one torch thread, that product took
10.5 ms per step against 3.6 ms for the replacement below (`bench/whisper_logits.py`, median of 30); the
decoder's four layers took 12-14 ms more per step (cProfile of 15 interim windows: their linear layers
about 4.6 ms, the rest eager attention and Python).

What stays exact: the int8 scores (one scale per vocabulary row, torch's dynamic quantization) only pick
candidates. The `CANDIDATES` best text tokens of each row and every special token (end of text, languages,
tasks, timestamps: about 1,600 rows) are scored again in float32 from the float32 weights, so a greedy step
picks the token the float32 projection picks (unless the best float32 token is outside the int8 top 128,
which would need an int8 error larger than the gap between the first and the 128th score), and language
detection and Whisper's timestamp rule (the timestamps' total probability against the best text token's)
compare float32 scores: the softmax's normaliser, the one approximate part, cancels out of that comparison.
The remaining scores are approximate; a decode uses them only through that normaliser, in beam search and in
the log-probabilities of the temperature fallback. Steps over several positions (the start of a generate
call) are computed in float32 throughout.

Measured with `bench/whisper_logits.py` (tiny.en, one torch thread, the shared clips, the best of two passes'
medians, quiet machine): 53 stream-like windows (0.6-8 s) as interim decodes 420 -> 318 ms (0.76), as final
decodes 789 -> 618 ms (0.78), the 6 whole clips 1,504 -> 1,423 ms (0.95); every text and every timestamp
equal. whisper-base (multilingual, its language detected; 6 decoder layers of 512, so the projection is a
smaller part of a step: 10.1 -> 2.5 ms): 0.98, 0.93 and 0.90 of float32's time (best of two passes; 0.79, 1.13
and 0.86 in a single pass before), every output equal. Live streams (`bench/asr_streaming.py --minutes 5
--streams 1`, back to back, with `fast_vocab_projection` on, off, on): final lag p50 1.51, 1.67, 1.49 s, p95
2.24, 2.55, 2.06 s, server CPU per second of audio 0.56, 0.66, 0.51, streamed WER against offline 0.041,
0.044, 0.042. The int8 copy adds a quarter of the embeddings' size in memory (19 MB for tiny.en); the float32
weights stay (they are the decoder's input embeddings too).

Only float32 projections on the CPU are replaced, and only large ones (a small vocabulary stays in cache, and
there is nothing to gain); `fast_vocab_projection: false` in a model's config keeps transformers' own.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..quantization import quantize_linear_layers

__all__ = ["CANDIDATES", "MIN_WEIGHT_BYTES", "RescoredProjection", "install", "installed"]

log = logging.getLogger(__name__)

# Text tokens per row scored again in float32. Greedy decoding needs one, but logits processors mask tokens
# (suppressed ones, the no-timestamps token) after the projection: the best allowed one must be among these.
CANDIDATES = 128
# Projections smaller than this stay float32: below a few MB the weights stay in the CPU's caches.
MIN_WEIGHT_BYTES = 16 << 20


class RescoredProjection(torch.nn.Module):
    """A bias-free `nn.Linear` replacement: int8 scores for the first `exact_from` rows, float32 for the
    `CANDIDATES` best of them and for every row from `exact_from` on."""

    def __init__(self, linear: torch.nn.Linear, exact_from: int) -> None:
        super().__init__()
        # The float32 weights themselves (tied to the decoder's input embeddings): no copy.
        self.weight = linear.weight
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.exact_from = exact_from
        head = torch.nn.Linear(linear.in_features, exact_from, bias=False)
        head.weight = torch.nn.Parameter(linear.weight.detach()[:exact_from], requires_grad=False)
        quantized = torch.nn.Sequential(head)
        quantize_linear_layers(quantized)
        self.approximate = quantized[0]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if hidden.dim() < 2 or hidden.shape[-2] != 1:
            return torch.nn.functional.linear(hidden, self.weight)
        scores = self.approximate(hidden)
        best = scores.topk(min(CANDIDATES, self.exact_from), dim=-1).indices
        exact = (self.weight[best] @ hidden.unsqueeze(-1)).squeeze(-1)
        scores.scatter_(-1, best, exact)
        if self.exact_from == self.out_features:
            return scores
        rest = torch.nn.functional.linear(hidden, self.weight[self.exact_from :])
        return torch.cat([scores, rest], dim=-1)


def installed(model: Any) -> bool:
    return isinstance(getattr(model, "proj_out", None), RescoredProjection)


def install(model: Any, min_weight_bytes: int | None = None) -> bool:
    """Replaces `model.proj_out` where it is a float32 projection on the CPU of `min_weight_bytes` or more
    (default MIN_WEIGHT_BYTES); returns whether it did."""
    if min_weight_bytes is None:
        min_weight_bytes = MIN_WEIGHT_BYTES
    linear = getattr(model, "proj_out", None)
    if installed(model):
        return True
    if (
        type(linear) is not torch.nn.Linear
        or linear.bias is not None
        or linear.weight.dtype != torch.float32
        or linear.weight.device.type != "cpu"
        or hasattr(linear, "_hf_hook")  # accelerate moves or offloads it at each call
        or linear.weight.numel() * linear.weight.element_size() < min_weight_bytes
        or not {"fbgemm", "x86", "qnnpack"} & set(torch.backends.quantized.supported_engines)
    ):
        return False
    model.proj_out = RescoredProjection(linear, _first_special(model, linear.out_features))
    log.info(
        "vocabulary projection in int8 (%d rows), float32 for %d candidates and the %d special rows",
        model.proj_out.exact_from,
        CANDIDATES,
        linear.out_features - model.proj_out.exact_from,
    )
    return True


def _first_special(model: Any, vocab: int) -> int:
    """Where Whisper's special tokens start: end-of-text, start, languages, tasks, no-timestamps, then the
    timestamps close the vocabulary. Language detection and the timestamp rule compare these tokens among
    themselves, so they are all scored in float32."""
    config = getattr(model, "generation_config", None)
    ids = [getattr(config, name, None) for name in ("eos_token_id", "decoder_start_token_id")]
    ids += [getattr(config, "no_timestamps_token_id", None)]
    for table in ("lang_to_id", "task_to_id"):
        ids += list((getattr(config, table, None) or {}).values())
    return min([i for i in ids if isinstance(i, int) and 0 < i < vocab], default=vocab)
