"""Tiny, randomly initialised speech models that load offline like real checkpoints.

The builders here write a complete model directory (weights, config, generation config, tokenizer,
feature extractor, processor) so that ``transformers.pipeline(task, model=str(path))`` loads it the way it
loads a checkpoint from the Hub, without any download. Everything is built from configs at call time with
fixed seeds, so the same arguments always give the same files and the same outputs.

Random weights alone make poor test models: greedy decoding of a random Whisper repeats one token until
``max_length``, never emits timestamps (or only timestamps), and a random CTC head emits only one class.
The builders therefore shape a few weights by hand (see the comments in each builder) so the models
produce varied, word-like output that ends by itself, with timestamp segments, and that depends on the
audio. Nothing about the output is meaningful: only its shape is.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

SAMPLING_RATE = 16000

# --------------------------------------------------------------------------------------------- audio


def tiny_audio(seconds: float, seed: int = 0, rate: int = SAMPLING_RATE) -> np.ndarray:
    """A mono float32 test signal: tones that change pitch and loudness, a little noise and two pauses.

    Values stay within [-1, 1]. The same arguments always give the same signal.
    """
    rng = np.random.default_rng(seed)
    n = max(int(round(seconds * rate)), 0)
    t = np.arange(n, dtype=np.float64) / rate
    signal = np.zeros(n, dtype=np.float64)
    # Three voices whose pitch steps every ~0.4 s, like syllables.
    step = max(int(0.4 * rate), 1)
    for _ in range(3):
        base = rng.uniform(120.0, 900.0)
        steps = rng.uniform(0.6, 1.6, size=n // step + 1)
        freq = base * np.repeat(steps, step)[:n]
        phase = 2 * np.pi * np.cumsum(freq) / rate
        signal += rng.uniform(0.1, 0.3) * np.sin(phase)
    # Loudness: a slow swell times a syllable-rate envelope.
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t + rng.uniform(0, 2 * np.pi))
    envelope *= 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * rng.uniform(1.5, 3.0) * t))
    signal *= envelope
    signal += rng.normal(0.0, 0.02, size=n)
    # Two short pauses (low noise only), if there is room.
    for _ in range(2 if seconds >= 2 else 0):
        start = int(rng.uniform(0.1, 0.8) * n)
        length = int(rng.uniform(0.1, 0.3) * rate)
        signal[start : start + length] = rng.normal(0.0, 0.005, size=len(signal[start : start + length]))
    peak = np.abs(signal).max() if n else 0.0
    if peak > 0.95:
        signal *= 0.95 / peak
    return signal.astype(np.float32)


# --------------------------------------------------------------------------------------------- whisper

# Whisper's languages in token order (the first 99: whisper v1/v2 and distil checkpoints). The
# tokenizer computes a language token as <|startoftranscript|> + 1 + index in this order, so the
# vocabulary must hold all of them, in this order, even though a tiny model cares about few.
_WHISPER_LANGUAGE_COUNT = 99

# Whole words of the tiny byte-level BPE vocabulary (each with the leading "Ġ" space marker, so the
# decoded text reads as space-separated words).
# fmt: off
_WHISPER_WORDS = [
    "the", "and", "of", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are", "with",
    "as", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "word", "but", "what",
    "some", "we", "can", "out", "other", "were", "all", "there", "when", "up", "use", "your", "how", "said",
    "an", "each", "she", "which", "do", "their", "time", "if", "will", "way", "about", "many", "then",
    "them", "hello", "world", "music", "sound", "tone", "noise", "test", "bonjour", "merci", "hallo", "danke",
]
# fmt: on

# Punctuation that real Whisper generation configs suppress (GPT-2 byte-symbol ids, the same here).
# fmt: off
_WHISPER_SUPPRESSED_SYMBOLS = [1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90, 91, 92, 93]
# fmt: on

_TIME_PRECISION = 0.02
_NUM_TIMESTAMPS = 1501


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, in GPT-2's vocabulary order."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _whisper_bpe() -> tuple[dict[str, int], list[tuple[str, str]], list[str]]:
    """256 byte symbols, then left-to-right merges that spell each of `_WHISPER_WORDS` with a leading space."""
    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    merges: list[tuple[str, str]] = []
    words = []
    for word in _WHISPER_WORDS:
        pieces = ["Ġ", *word]
        current = pieces[0]
        for piece in pieces[1:]:
            merged = current + piece
            if merged not in vocab:
                merges.append((current, piece))
                vocab[merged] = len(vocab)
            current = merged
        words.append(current)
    return vocab, merges, words


def _whisper_special_tokens() -> list[str]:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    languages = list(LANGUAGES)[:_WHISPER_LANGUAGE_COUNT]
    return [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in languages),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
    ]


def _whisper_tokenizer():
    """A WhisperTokenizer laid out like OpenAI's: text tokens, then the specials, then 1501 timestamps."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    vocab, merges, _ = _whisper_bpe()
    tokenizer = WhisperTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    # In id order, ending with <|notimestamps|>: transformers takes the last special id + 1 as the first
    # timestamp id.
    tokenizer.add_special_tokens({"extra_special_tokens": _whisper_special_tokens()})
    # Not special: Whisper's decoding finds timestamps as the ids above the last special token.
    tokenizer.add_tokens(
        [
            AddedToken(
                f"<|{i * _TIME_PRECISION:.2f}|>", special=False, normalized=False, lstrip=False, rstrip=False
            )
            for i in range(_NUM_TIMESTAMPS)
        ]
    )
    return tokenizer


# Channels of the tiny decoder's residual stream that carry hand-set signals (the rest are random).
_BIAS, _COS, _SIN, _STOP, _AFTER_TS = 0, 1, 2, 3, 4
_N_CONTROL = 5
# The decoder's clock turns by this angle per generated token, from the 4th position on (the first
# positions hold the <|startoftranscript|> <|lang|> <|task|> prompt).
_CLOCK_START = 3
# Timestamp k sits at angle k * _TS_ANGLE; the clock turns _SECONDS_PER_TOKEN / 0.02 timestamps per token.
_TS_ANGLE = math.pi / 1600
_SECONDS_PER_TOKEN = 0.3
_CLOCK_AMPLITUDE = 3.0
_STOP_AMPLITUDE = 4.0
_AFTER_TS_AMPLITUDE = 4.0
_CROSS_ATTENTION_SHARPNESS = 4.0
_CROSS_ATTENTION_GAIN = 1.0
_ENCODER_CLOCK_AMPLITUDE = 2.0
_ALIGNMENT_GAIN = 2.0
_POSITION_SCALE = 1.0


def _clock_angle(position: np.ndarray) -> np.ndarray:
    per_token = _TS_ANGLE * _SECONDS_PER_TOKEN / _TIME_PRECISION
    return np.minimum(np.maximum(position - _CLOCK_START, 0) * per_token, _TS_ANGLE * (_NUM_TIMESTAMPS - 1))


def _shape_whisper_encoder(model, generator) -> None:
    """Scale the convolutions so the encoder output depends on the audio, not only on the positions, and
    keep two channels as a clean clock: encoder position p (20 ms) at angle p * _TS_ANGLE, the angle of
    timestamp p, for the alignment heads to find."""
    import torch

    enc = model.model.encoder
    for conv in (enc.conv1, enc.conv2):
        fan_in = conv.in_channels * conv.kernel_size[0]
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (2 / math.sqrt(fan_in)))
        conv.bias.zero_()
    # _BIAS holds 0 before the final layer norm: subtracting it after cancels the norm's mean.
    clock = [_BIAS, _COS, _SIN]
    enc.conv2.weight[clock] = 0
    for layer in enc.layers:
        for linear in (layer.self_attn.out_proj, layer.fc2):
            linear.weight[clock] = 0
            linear.bias[clock] = 0
    angle = torch.arange(enc.embed_positions.weight.shape[0], dtype=torch.float32) * _TS_ANGLE
    enc.embed_positions.weight[:, _BIAS] = 0
    enc.embed_positions.weight[:, _COS] = _ENCODER_CLOCK_AMPLITUDE * torch.cos(angle)
    enc.embed_positions.weight[:, _SIN] = _ENCODER_CLOCK_AMPLITUDE * torch.sin(angle)


def _shape_whisper_decoder(model, tokenizer, generator) -> None:
    """Rewrite the decoder so greedy decoding behaves like a (babbling) Whisper. See build_tiny_whisper."""
    import torch

    dec = model.model.decoder
    d = model.config.d_model

    def normal(shape, std):
        return torch.randn(shape, generator=generator) * std

    for layer in dec.layers:
        for attn in (layer.self_attn, layer.encoder_attn):
            for linear in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj):
                linear.weight.copy_(normal(linear.weight.shape, 1 / math.sqrt(d)))
                if linear.bias is not None:
                    linear.bias.zero_()
        layer.fc1.weight.copy_(normal(layer.fc1.weight.shape, 1 / math.sqrt(d)))
        layer.fc1.bias.zero_()
        layer.fc2.weight.copy_(normal(layer.fc2.weight.shape, 1 / math.sqrt(layer.fc2.in_features)))
        layer.fc2.bias.zero_()
        # Cross-attention sharp enough to pick out audio frames, and loud enough to matter.
        layer.encoder_attn.q_proj.weight.mul_(_CROSS_ATTENTION_SHARPNESS)
        if layer is dec.layers[-1]:
            # The last layer's heads are the alignment heads: each looks at the encoder frames whose clock
            # matches the decoder's, so token i attends to the audio around i * 0.3 s, and word timestamps
            # (dynamic time warping over these attentions) move forward with the text.
            attn = layer.encoder_attn
            head_dim = attn.head_dim
            attn.q_proj.weight.zero_()
            attn.k_proj.weight.zero_()
            for head in range(d // head_dim):
                for row, channel in ((head * head_dim, _COS), (head * head_dim + 1, _SIN)):
                    attn.q_proj.weight[row, channel] = _ALIGNMENT_GAIN * math.sqrt(head_dim)
                    attn.k_proj.weight[row, channel] = 1.0
                    attn.k_proj.weight[row, _BIAS] = -1.0
        layer.encoder_attn.out_proj.weight.mul_(_CROSS_ATTENTION_GAIN)
        # The layers read the control channels but never write them, and what they write has zero mean
        # across channels, so that it does not shift the final layer norm's mean (which would turn the clock).
        for linear in (layer.self_attn.out_proj, layer.encoder_attn.out_proj, layer.fc2):
            linear.weight[:_N_CONTROL] = 0
            linear.weight[_N_CONTROL:] -= linear.weight[_N_CONTROL:].mean(0, keepdim=True)
            linear.bias.zero_()

    vocab, _, _ = _whisper_bpe()
    embed = dec.embed_tokens.weight
    embed.copy_(normal(embed.shape, 1.0))
    embed[:, :_N_CONTROL] = 0
    embed[vocab["."], _STOP] = _STOP_AMPLITUDE
    # Timestamps and the prompt's special tokens raise a flag: no "." may follow them.
    embed[tokenizer.convert_tokens_to_ids("<|endoftext|>") :, _AFTER_TS] = _AFTER_TS_AMPLITUDE
    # Zero mean across channels (control ones included), so the final layer norm's mean stays 0.
    embed[:, _N_CONTROL:] -= embed.mean(1, keepdim=True) * d / (d - _N_CONTROL)

    positions = dec.embed_positions.weight
    positions.copy_(normal(positions.shape, _POSITION_SCALE))
    positions[:, :_N_CONTROL] = 0
    angle = torch.from_numpy(_clock_angle(np.arange(positions.shape[0]))).float()
    positions[:, _COS] = _CLOCK_AMPLITUDE * torch.cos(angle)
    positions[:, _SIN] = _CLOCK_AMPLITUDE * torch.sin(angle)
    positions[:, _N_CONTROL:] -= positions.mean(1, keepdim=True) * d / (d - _N_CONTROL)

    final = dec.layer_norm
    final.weight.fill_(1.0)
    final.bias.zero_()
    final.weight[_BIAS] = 0.0
    final.bias[_BIAS] = 1.0


# Logit levels of the tiny Whisper's output layer (see build_tiny_whisper).
_NOISE = 1.5  # std of the random, context- and audio-dependent part of each text token's logit
_LEVEL_WORD = 0.0
_LEVEL_DOT = 3.5
_LEVEL_FRAGMENT = -3.0  # single letters and the partial words the merges create
_LEVEL_BYTE = -8.0  # other byte symbols
_LEVEL_SPECIAL = -30.0
_LANGUAGE_BONUS = {"<|en|>": 3.0, "<|de|>": 1.5, "<|fr|>": 1.5}
_EOT_BASE = -6.0
_EOT_CLOCK = 14.0  # end of text grows likelier as the clock turns ...
_EOT_AFTER_DOT = 3.0  # ... and right after a "."
_TS_PEAK = -4.0  # the best timestamp's logit: the one matching the clock
_TS_SHARPNESS = 10.0
_TS_AFTER_DOT = 5.0  # a "." makes the timestamps' total probability win: the segment closes
_TS_AFTER_TS = -3.0  # after a segment's closing timestamp, end of text can win over opening another
_REPEAT_PENALTY = 4.0


def _shape_whisper_output(
    model, tokenizer, generator, radius, stop_level, after_ts_level, noise_norm, self_projection
) -> None:
    import torch

    vocab, _, words = _whisper_bpe()
    specials = tokenizer.convert_tokens_to_ids(_whisper_special_tokens())
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    weight = model.proj_out.weight
    vocab_size, d = weight.shape
    weight.copy_(torch.randn(weight.shape, generator=generator) * (_NOISE / noise_norm))
    weight[:, :_N_CONTROL] = 0
    bias = torch.full((vocab_size,), _LEVEL_BYTE)
    letters = [ch for ch in vocab if len(ch) > 1 or ch.isalpha() and ch.isascii()]
    bias[[vocab[ch] for ch in letters]] = _LEVEL_FRAGMENT
    bias[[vocab[w] for w in words]] = _LEVEL_WORD
    bias[vocab["."]] = _LEVEL_DOT
    weight[vocab["."], _STOP] = -_TS_AFTER_DOT / stop_level  # no ".."
    weight[vocab["."], _AFTER_TS] = -_TS_AFTER_DOT / after_ts_level  # no "." to open a segment
    # Penalise repeating the current token: its embedding is a large part of the hidden state.
    text = slice(0, eot + 1)
    embed = model.model.decoder.embed_tokens.weight[text, _N_CONTROL:]
    weight[text, _N_CONTROL:] -= (_REPEAT_PENALTY / self_projection) * embed / embed.norm(dim=1, keepdim=True)

    bias[specials] = _LEVEL_SPECIAL
    for token, bonus in _LANGUAGE_BONUS.items():
        bias[tokenizer.convert_tokens_to_ids(token)] += bonus
    bias[eot] = _EOT_BASE
    weight[eot, _N_CONTROL:] *= 0.3  # steadier: end of text follows the clock more than the context
    weight[eot, _SIN] = _EOT_CLOCK / radius
    weight[eot, _STOP] = _EOT_AFTER_DOT / stop_level

    first = tokenizer.convert_tokens_to_ids("<|notimestamps|>") + 1
    ts = slice(first, first + _NUM_TIMESTAMPS)
    angle = torch.arange(_NUM_TIMESTAMPS, dtype=torch.float32) * _TS_ANGLE
    weight[ts] = 0  # no noise: the clock alone picks the timestamp
    bias[ts] = _TS_PEAK - _TS_SHARPNESS
    weight[ts, _COS] = _TS_SHARPNESS / radius * torch.cos(angle)
    weight[ts, _SIN] = _TS_SHARPNESS / radius * torch.sin(angle)
    weight[ts, _STOP] = _TS_AFTER_DOT / stop_level
    weight[ts, _AFTER_TS] = _TS_AFTER_TS / after_ts_level
    weight[:, _BIAS] = bias


def _calibrate_whisper_decoder(model, tokenizer, generator) -> tuple[float, ...]:
    """Measure, on word sequences over test audio, the final hidden state's clock radius, its flag values
    after a "." and after a timestamp, the norm of its random part and its projection on the current token's
    embedding, so the output layer can be set in logit units."""
    import torch
    from transformers import WhisperFeatureExtractor

    vocab, _, words = _whisper_bpe()
    extractor = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins, sampling_rate=SAMPLING_RATE)
    audio = [tiny_audio(seconds, seed=i) for i, seconds in enumerate((3.0, 9.0, 20.0))]
    features = extractor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt").input_features
    first_timestamp = tokenizer.convert_tokens_to_ids("<|notimestamps|>") + 1
    choices = torch.tensor([vocab[w] for w in words] + [vocab["."], first_timestamp + 100])
    ids = choices[torch.randint(len(choices), (len(audio), 64), generator=generator)]
    ids[:, 0] = model.config.decoder_start_token_id
    encoded = model.model.encoder(features).last_hidden_state
    hidden = model.model.decoder(input_ids=ids, encoder_hidden_states=encoded).last_hidden_state
    radius = hidden[:, _CLOCK_START:, _COS : _SIN + 1].norm(dim=-1).mean().item()
    stop_level = hidden[..., _STOP][ids == vocab["."]].mean().item()
    after_ts_level = hidden[..., _AFTER_TS][ids >= first_timestamp].mean().item()
    noise_norm = hidden[..., _N_CONTROL:].norm(dim=-1).mean().item()
    embed = model.model.decoder.embed_tokens.weight[ids][..., _N_CONTROL:]
    self_projection = (hidden[..., _N_CONTROL:] * embed).sum(-1) / embed.norm(dim=-1)
    return radius, stop_level, after_ts_level, noise_norm, self_projection.mean().item()


def build_tiny_whisper(
    path: Path, *, multilingual: bool = True, seed: int = 0, d_model: int = 64, layers: int = 2
) -> Path:
    """Save a tiny WhisperForConditionalGeneration with its tokenizer, feature extractor and processor.

    The layout is a real Whisper's, scaled down: 80 mel bins, 1500 encoder positions (30 s windows),
    d_model 64, 2 encoder and 2 decoder layers of 2 heads, 448 decoder positions (about 2.6 MB). The tokenizer is a
    byte-level BPE (GPT-2's 256 byte symbols plus merges spelling ~70 words) followed by Whisper's special
    tokens in Whisper's order (<|endoftext|>, <|startoftranscript|>, the 99 language tokens, <|translate|>,
    <|transcribe|>, <|startoflm|>, <|startofprev|>, <|nocaptions|>, <|notimestamps|>) and the 1501
    timestamp tokens <|0.00|> .. <|30.00|>. The generation config carries what Whisper's ``generate``
    needs for timestamps, word timestamps (alignment heads), language detection, ``language=`` and
    ``task=``; ``max_length`` is 64 so decoding stays short. ``multilingual=False`` gives an English-only
    model (``is_multilingual`` false, no ``lang_to_id``/``task_to_id``), like ``whisper-*.en``.
    ``d_model`` (a multiple of 2 heads, at least 16) and ``layers`` (per side) give bigger, slower
    variants that behave the same way (e.g. a model that takes a while to load).

    The decoder is random but steered (weights set by hand, then scaled from a calibration pass):

    * the final layer norm holds one channel at 1, so that column of the (untied) output projection is
      a per-token logit bias: whole words are favoured over single letters and byte symbols, special
      tokens are effectively never generated mid-text, and English is the likeliest language;
    * the decoder's positional embedding carries a clock (cos, sin of an angle growing 0.3 s worth of
      timestamps per token); timestamp k's output row points at angle k, so the argmax timestamp follows
      the number of tokens decoded, and end-of-text grows likelier with the clock, so decoding ends by
      itself after roughly 10-30 tokens;
    * the embedding of "." raises a stop flag that makes the timestamps' total probability beat any text
      token, so with timestamps a "." closes a segment; timestamps and prompt tokens raise another flag
      that forbids a "." right after them and lets end-of-text win after a closing timestamp;
    * the last decoder layer's two cross-attention heads (the ``alignment_heads``) look at the encoder
      frames whose own clock (two channels of the encoder's positional embedding) matches the decoder's,
      so word timestamps move forward with the text (roughly, not precisely);
    * everything else (the rest of the embeddings, the attention layers, the output rows) is random, with
      cross-attention strong enough that the text depends on the audio, and a penalty against repeating
      the current token, so the text varies instead of looping.
    """
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _whisper_tokenizer()
    token_id = tokenizer.convert_tokens_to_ids
    eot, sot = token_id("<|endoftext|>"), token_id("<|startoftranscript|>")
    begin_suppress = [token_id("Ġ"), eot]
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        begin_suppress_tokens=begin_suppress,
        # Untied, so the output layer can be shaped without touching the input embeddings.
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WhisperForConditionalGeneration(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        _shape_whisper_encoder(model, generator)
        _shape_whisper_decoder(model, tokenizer, generator)
        calibration = _calibrate_whisper_decoder(model, tokenizer, generator)
        _shape_whisper_output(model, tokenizer, generator, *calibration)

    specials = _whisper_special_tokens()
    extra = {}
    if multilingual:
        extra = {
            "lang_to_id": {token: token_id(token) for token in specials[2 : 2 + _WHISPER_LANGUAGE_COUNT]},
            "task_to_id": {"translate": token_id("<|translate|>"), "transcribe": token_id("<|transcribe|>")},
            "task": "transcribe",
        }
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=64,
        num_beams=1,
        do_sample=False,
        suppress_tokens=_WHISPER_SUPPRESSED_SYMBOLS
        + token_id(
            [
                "<|startoftranscript|>",
                "<|translate|>",
                "<|transcribe|>",
                "<|startoflm|>",
                "<|startofprev|>",
                "<|nocaptions|>",
            ]
        ),
        begin_suppress_tokens=begin_suppress,
        alignment_heads=[[layers - 1, 0], [layers - 1, 1]],
        no_timestamps_token_id=token_id("<|notimestamps|>"),
        prev_sot_token_id=token_id("<|startofprev|>"),
        max_initial_timestamp_index=50,
        is_multilingual=multilingual,
        return_timestamps=False,
        **extra,
    )
    model.save_pretrained(path)
    feature_extractor = WhisperFeatureExtractor(feature_size=80, sampling_rate=SAMPLING_RATE)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(path)
    return path


# --------------------------------------------------------------------------------------------- wav2vec2

# facebook/wav2vec2-base-960h's vocabulary: specials, the word delimiter, then letters by frequency.
_CTC_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"]
# Logit biases of the tiny CTC head (see build_tiny_wav2vec2_ctc).
_CTC_BLANK = 4.5
_CTC_DELIMITER = 2.0
_CTC_LETTER = 0.0
_CTC_SPECIAL = -30.0
_CTC_NOISE = 1.5
_CTC_BLANK_ON_PADDING = 20.0


def build_tiny_wav2vec2_ctc(path: Path, *, seed: int = 0) -> Path:
    """Save a tiny Wav2Vec2ForCTC with a character tokenizer, feature extractor and processor.

    Like wav2vec2-large-960h-lv60-self scaled down: layer-norm feature encoder (3 convolutions, strides
    5 * 8 * 8 = 320 samples, so one frame per 20 ms as in the real models), 2 stable-layer-norm
    transformer layers of width 32. The vocabulary is base-960h's: <pad> (the CTC blank), <s>, </s>,
    <unk>, the "|" word delimiter, 26 upper-case letters and the apostrophe.

    The CTC head is random but steered: its bias makes the blank the likeliest class, then letters and
    the word delimiter, and never the special tokens; its weights are scaled so the per-frame argmax
    changes with the audio. Greedy decoding of a few seconds of ``tiny_audio`` gives several short
    "words". Padding frames (batched inputs of different lengths) decode to blanks, as with a trained
    model, so a batch gives the same text as its inputs one by one.
    """
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab_file = path / "vocab.json"
    vocab_file.write_text(json.dumps({token: i for i, token in enumerate(_CTC_VOCAB)}), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(
        str(vocab_file),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        word_delimiter_token="|",
        do_lower_case=False,
    )
    config = Wav2Vec2Config(
        vocab_size=len(_CTC_VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32, 32, 32),
        conv_stride=(5, 8, 8),
        conv_kernel=(10, 8, 8),
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        ctc_loss_reduction="mean",
        apply_spec_augment=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Wav2Vec2ForCTC(config).eval()
    generator = torch.Generator().manual_seed(seed)
    feature_extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLING_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )
    with torch.no_grad():
        # Calibrate on test audio: centre the head on the mean hidden state and scale each class's
        # random part to _CTC_NOISE, so the biases alone set how often each class wins.
        audio = [tiny_audio(seconds, seed=seed + i) for i, seconds in enumerate((3.0, 7.0, 12.0))]
        inputs = feature_extractor(audio, sampling_rate=SAMPLING_RATE, padding=True, return_tensors="pt")
        hidden = model.wav2vec2(**inputs)[0]
        valid = model._get_feature_vector_attention_mask(hidden.shape[1], inputs["attention_mask"]).bool()
        speech, padding = hidden[valid], hidden[~valid]
        centre = speech.mean(0)
        head = model.lm_head
        weight = torch.randn(head.weight.shape, generator=generator)
        weight *= _CTC_NOISE / ((speech - centre) @ weight.T).std(0).unsqueeze(1)
        bias = torch.full((len(_CTC_VOCAB),), _CTC_LETTER)
        bias[0] = _CTC_BLANK
        bias[1:4] = _CTC_SPECIAL
        bias[4] = _CTC_DELIMITER
        weight[1:4] = 0
        # Like a trained model, emit blanks on the padding of a batch (whose frames look alike): without
        # this, batching inputs of different lengths would add letters at the end of the shorter ones.
        towards_padding = padding.mean(0) - centre
        weight[0] += _CTC_BLANK_ON_PADDING * towards_padding / towards_padding.square().sum()
        head.weight.copy_(weight)
        head.bias.copy_(bias - weight @ centre)

    model.save_pretrained(path)
    Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(path)
    return path
