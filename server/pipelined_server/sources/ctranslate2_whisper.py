"""Convert a CTranslate2 Whisper model directory into a transformers Whisper model directory.

CTranslate2 ("CT2", the format faster-whisper uses) stores a Whisper model as:

* ``model.bin``: every weight, in the binary layout written by CTranslate2's ``ModelSpec._serialize``;
* ``config.json``: alignment heads, language ids and the suppressed token lists;
* ``tokenizer.json``: the Hugging Face tokenizer, minus the 1,501 timestamp tokens;
* ``vocabulary.txt``: one token per line, timestamps included.

The conversion is lossless: float16/bfloat16 weights are widened to float32 exactly, fused projections are
split back, and every variable in the file is either mapped or proven redundant (else we refuse).
Only int8/int16-quantised files lose information, because CT2 threw it away when quantising.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

__all__ = [
    "CONVERTER_VERSION",
    "CT2FormatError",
    "CT2Model",
    "WhisperDims",
    "WhisperSpecialTokens",
    "WhisperWeights",
    "convert_ct2_whisper",
    "build_whisper_tokenizer",
    "ct2_whisper_to_hf_state_dict",
    "read_ct2_model",
    "read_ct2_variables",
    "read_ct2_variables_from_parts",
    "read_special_tokens",
    "timestamp_tokens",
    "write_hf_whisper",
]

# Bump when the output of the conversion changes, so cached conversions get rebuilt.
CONVERTER_VERSION = 1

# Newest model.bin layout this reader understands (CTranslate2 4.x writes 6).
MAX_BINARY_VERSION = 6

# Order of CTranslate2's `DataType` enum (include/ctranslate2/types.h): the file stores the index.
_CT2_DTYPES: tuple[str, ...] = ("float32", "int8", "int16", "int32", "float16", "bfloat16")

# CTranslate2 `ops::ActivationType` values that Whisper-like decoders use, as transformers ACT2FN names.
_CT2_ACTIVATIONS: dict[int, str] = {0: "relu", 1: "gelu_new", 2: "silu", 3: "gelu"}

# Whisper's timestamp tokens cover 0.00 s .. 30.00 s in 20 ms steps.
TIME_PRECISION = 0.02
NUM_TIMESTAMP_TOKENS = 1501

# Whisper samples speech at 16 kHz; the number of mel bins comes from the model's first convolution.
SAMPLING_RATE = 16_000

# openai/whisper allows the first timestamp to be at most 1.0 s (50 * 20 ms); CT2 uses the same default.
MAX_INITIAL_TIMESTAMP_INDEX = 50

# Whisper vocabularies of this size or more are multilingual (the rule openai/whisper itself uses).
MULTILINGUAL_VOCAB_SIZE = 51865

# Some tokenizers spell Hebrew with its pre-1989 ISO code; transformers resolves "hebrew" to "<|he|>".
_LANGUAGE_TOKEN_ALIASES: dict[str, str] = {"<|iw|>": "<|he|>"}

# Scalars of CTranslate2's WhisperSpec: they describe the architecture and carry no weights. Any other
# variable left unmapped means an architecture we do not know, and the conversion is refused.
_SPEC_FLAGS = frozenset(
    {
        "decoder/activation",
        "decoder/alibi",
        "decoder/alignment_heads",  # CT2's own attention-return settings, not Whisper's alignment heads
        "decoder/alignment_layer",
        "decoder/num_heads",
        "decoder/pre_norm",
        "decoder/scale_embeddings",
        "decoder/start_from_zero_embedding",
        "encoder/num_heads",
    }
)


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 Whisper model this converter can reproduce exactly."""


# --------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class CT2Model:
    """The decoded content of a ``model.bin``; aliased names point at the same array as their target."""

    spec: str
    revision: int
    binary_version: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)


class _ConcatReader:
    """Reads several files as one stream, because pip packages cap file size and some models are split."""

    def __init__(self, paths: Sequence[Path]) -> None:
        if not paths:
            raise ValueError("no model file given")
        self._paths = [Path(p) for p in paths]
        self._total = sum(p.stat().st_size for p in self._paths)
        self._next = 0
        self._handle: io.BufferedReader | None = None
        self.position = 0

    def __enter__(self) -> _ConcatReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    @property
    def remaining(self) -> int:
        return self._total - self.position

    def read(self, size: int) -> bytearray:
        # A writable buffer lets numpy/torch wrap the bytes without a copy or a read-only warning.
        buffer = bytearray(size)
        view = memoryview(buffer)
        filled = 0
        while filled < size:
            if self._handle is None:
                if self._next >= len(self._paths):
                    raise CT2FormatError(
                        f"model.bin is truncated: wanted {size} bytes at offset {self.position}, "
                        f"found {filled} (files: {', '.join(map(str, self._paths))})"
                    )
                self._handle = open(self._paths[self._next], "rb")  # noqa: SIM115 - closed in close()
                self._next += 1
            got = self._handle.readinto(view[filled:])
            if not got:
                self._handle.close()
                self._handle = None
                continue
            filled += got
        self.position += size
        return buffer

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.read(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (length,) = self.unpack("H")  # includes the trailing NUL
        return bytes(self.read(length)).rstrip(b"\0").decode("utf-8")


def _decode_array(raw: bytearray, dtype_name: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype_name == "bfloat16":
        # numpy has no bfloat16; its bits are the top half of a float32, so widening is exact.
        halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return halves.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=np.dtype(dtype_name).newbyteorder("<")).reshape(shape)


def _paths(source: Path | str | Sequence[Path | str]) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        return [Path(source)]
    return [Path(p) for p in source]


def read_ct2_model(source: Path | str | Sequence[Path | str]) -> CT2Model:
    """Parse a CTranslate2 ``model.bin``; a list of paths is read as the concatenation of split parts."""
    with _ConcatReader(_paths(source)) as reader:
        (binary_version,) = reader.unpack("I")
        if not 1 <= binary_version <= MAX_BINARY_VERSION:
            raise CT2FormatError(
                f"unsupported CTranslate2 binary version {binary_version} (this reader knows 1..{MAX_BINARY_VERSION})"
            )
        spec, revision = "", 1
        if binary_version >= 2:
            spec = reader.string()
            (revision,) = reader.unpack("I")

        (count,) = reader.unpack("I")
        variables: dict[str, np.ndarray] = {}
        for _ in range(count):
            name = reader.string()
            (rank,) = reader.unpack("B")
            shape = tuple(reader.unpack(f"{rank}I")) if rank else ()
            if binary_version >= 4:
                type_id, num_bytes = reader.unpack("BI")
                if type_id >= len(_CT2_DTYPES):
                    raise CT2FormatError(f"variable {name!r} has unknown dtype id {type_id}")
                dtype_name = _CT2_DTYPES[type_id]
            else:
                # Before version 4 the file stored the item size, not the type, and a count, not bytes.
                item_size, item_count = reader.unpack("BI")
                legacy_dtype = {4: "float32", 2: "int16", 1: "int8"}.get(item_size)
                if legacy_dtype is None:
                    raise CT2FormatError(f"variable {name!r} has unknown item size {item_size}")
                dtype_name = legacy_dtype
                num_bytes = item_size * item_count
            expected = int(np.prod(shape, dtype=np.int64)) * (
                2 if dtype_name == "bfloat16" else np.dtype(dtype_name).itemsize
            )
            if num_bytes != expected:
                raise CT2FormatError(
                    f"variable {name!r}: {num_bytes} bytes for shape {shape} of {dtype_name}"
                )
            variables[name] = _decode_array(reader.read(num_bytes), dtype_name, shape)

        aliases: dict[str, str] = {}
        if binary_version >= 3:
            (alias_count,) = reader.unpack("I")
            for _ in range(alias_count):
                alias, target = reader.string(), reader.string()
                aliases[alias] = target
        if reader.remaining:
            raise CT2FormatError(f"{reader.remaining} unexpected trailing bytes after the model variables")

    for alias, target in aliases.items():
        if target not in variables:
            raise CT2FormatError(f"alias {alias!r} points at missing variable {target!r}")
        variables[alias] = variables[target]
        # CTranslate2 also aliases the quantisation scale of an aliased weight.
        if target + "_scale" in variables:
            variables[alias + "_scale"] = variables[target + "_scale"]
    return CT2Model(
        spec=spec, revision=revision, binary_version=binary_version, variables=variables, aliases=aliases
    )


def read_ct2_variables(source: Path | str | Sequence[Path | str]) -> dict[str, np.ndarray]:
    """All variables of a ``model.bin`` by CT2 name, aliases resolved, in their stored dtype."""
    return read_ct2_model(source).variables


def read_ct2_variables_from_parts(parts: Sequence[Path | str]) -> dict[str, np.ndarray]:
    """Like `read_ct2_variables` for a ``model.bin`` split into ordered parts (``model.bin.part1``, ...)."""
    if not parts:
        raise ValueError("no model parts given")
    return read_ct2_model(list(parts)).variables


# --------------------------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class WhisperDims:
    """The architecture, recovered from tensor shapes and the spec's scalars."""

    vocab_size: int
    num_mel_bins: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    max_source_positions: int
    max_target_positions: int
    activation_function: str


@dataclass(frozen=True)
class WhisperWeights:
    dims: WhisperDims
    state_dict: dict[str, np.ndarray]
    tie_word_embeddings: bool


class _Variables:
    """CT2 variables as float32, recording which were consumed so leftovers can be reported."""

    def __init__(self, variables: dict[str, np.ndarray]) -> None:
        self._variables = variables
        self.used: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self._variables

    def scalar(self, name: str, default: int) -> int:
        if name not in self._variables:
            return default
        self.used.add(name)
        return int(self._variables[name])

    def tensor(self, name: str) -> np.ndarray:
        if name not in self._variables:
            raise CT2FormatError(f"model.bin has no variable {name!r}; is this a CTranslate2 Whisper model?")
        self.used.add(name)
        value = self._variables[name]
        if value.dtype in (np.int8, np.int16):
            # Quantised weights: CT2 stored round(w * scale); dividing back is the best available inverse.
            scale_name = name + "_scale"
            if scale_name not in self._variables:
                raise CT2FormatError(f"quantised variable {name!r} has no {scale_name!r}")
            self.used.add(scale_name)
            scale = self._variables[scale_name].astype(np.float32)
            scale = scale.reshape(scale.shape + (1,) * (value.ndim - scale.ndim))
            return value.astype(np.float32) / scale
        if value.dtype.kind != "f":
            raise CT2FormatError(f"variable {name!r} has non-float dtype {value.dtype}")
        # float16 -> float32 is exact; float32 stays as is (no copy).
        return value.astype(np.float32, copy=False)

    def leftovers(self) -> list[str]:
        return sorted(set(self._variables) - self.used - _SPEC_FLAGS)


def _count_layers(variables: _Variables, prefix: str) -> int:
    count = 0
    while f"{prefix}/layer_{count}/ffn/linear_0/weight" in variables:
        count += 1
    return count


def _linear(out: dict[str, np.ndarray], dst: str, variables: _Variables, src: str) -> None:
    out[f"{dst}.weight"] = variables.tensor(f"{src}/weight")
    out[f"{dst}.bias"] = variables.tensor(f"{src}/bias")


def _layer_norm(out: dict[str, np.ndarray], dst: str, variables: _Variables, src: str) -> None:
    out[f"{dst}.weight"] = variables.tensor(f"{src}/gamma")
    out[f"{dst}.bias"] = variables.tensor(f"{src}/beta")


def _split_qkv(
    out: dict[str, np.ndarray], dst: str, variables: _Variables, src: str, names: Sequence[str]
) -> None:
    weight = variables.tensor(f"{src}/weight")
    bias = variables.tensor(f"{src}/bias")
    for index, (part_weight, part_bias) in enumerate(
        zip(np.split(weight, len(names)), np.split(bias, len(names)), strict=True)
    ):
        out[f"{dst}.{names[index]}.weight"] = part_weight
        # Whisper's key projection has no bias; CT2 fused a zero one. Even a non-zero key bias adds the same
        # q.b to every attention score of a query, which softmax cancels, so dropping it is exact.
        if names[index] != "k_proj":
            out[f"{dst}.{names[index]}.bias"] = part_bias


def _attention_block(
    out: dict[str, np.ndarray], dst: str, variables: _Variables, src: str, *, cross: bool
) -> None:
    if cross:
        # Cross-attention: linear_0 is Q (from the decoder), linear_1 the fused K|V (from the encoder).
        _linear(out, f"{dst}.q_proj", variables, f"{src}/linear_0")
        _split_qkv(out, dst, variables, f"{src}/linear_1", ("k_proj", "v_proj"))
        _linear(out, f"{dst}.out_proj", variables, f"{src}/linear_2")
    else:
        _split_qkv(out, dst, variables, f"{src}/linear_0", ("q_proj", "k_proj", "v_proj"))
        _linear(out, f"{dst}.out_proj", variables, f"{src}/linear_1")


def _feed_forward(out: dict[str, np.ndarray], dst: str, variables: _Variables, src: str) -> None:
    _linear(out, f"{dst}.fc1", variables, f"{src}/linear_0")
    _linear(out, f"{dst}.fc2", variables, f"{src}/linear_1")
    _layer_norm(out, f"{dst}.final_layer_norm", variables, f"{src}/layer_norm")


def _check_supported(variables: _Variables) -> str:
    if not variables.scalar("decoder/pre_norm", 1):
        raise CT2FormatError("post-norm decoders are not Whisper")
    for flag in ("decoder/alibi", "decoder/scale_embeddings", "decoder/start_from_zero_embedding"):
        if variables.scalar(flag, 0):
            raise CT2FormatError(f"{flag} is set; transformers' Whisper has no such option")
    activation_id = variables.scalar("decoder/activation", 3)
    if activation_id not in _CT2_ACTIVATIONS:
        raise CT2FormatError(f"unsupported activation id {activation_id}")
    return _CT2_ACTIVATIONS[activation_id]


def ct2_whisper_to_hf_state_dict(raw: dict[str, np.ndarray]) -> WhisperWeights:
    """Map CT2 Whisper variables to a transformers ``WhisperForConditionalGeneration`` state dict."""
    variables = _Variables(raw)
    activation = _check_supported(variables)
    out: dict[str, np.ndarray] = {}

    # Encoder.
    for conv in ("conv1", "conv2"):
        _linear(out, f"model.encoder.{conv}", variables, f"encoder/{conv}")
    out["model.encoder.embed_positions.weight"] = variables.tensor("encoder/position_encodings/encodings")
    encoder_layers = _count_layers(variables, "encoder")
    for i in range(encoder_layers):
        src, dst = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        _attention_block(out, f"{dst}.self_attn", variables, f"{src}/self_attention", cross=False)
        _layer_norm(out, f"{dst}.self_attn_layer_norm", variables, f"{src}/self_attention/layer_norm")
        _feed_forward(out, dst, variables, f"{src}/ffn")
    _layer_norm(out, "model.encoder.layer_norm", variables, "encoder/layer_norm")

    # Decoder.
    embeddings = variables.tensor("decoder/embeddings/weight")
    out["model.decoder.embed_tokens.weight"] = embeddings
    out["model.decoder.embed_positions.weight"] = variables.tensor("decoder/position_encodings/encodings")
    decoder_layers = _count_layers(variables, "decoder")
    for i in range(decoder_layers):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        _attention_block(out, f"{dst}.self_attn", variables, f"{src}/self_attention", cross=False)
        _layer_norm(out, f"{dst}.self_attn_layer_norm", variables, f"{src}/self_attention/layer_norm")
        _attention_block(out, f"{dst}.encoder_attn", variables, f"{src}/attention", cross=True)
        _layer_norm(out, f"{dst}.encoder_attn_layer_norm", variables, f"{src}/attention/layer_norm")
        _feed_forward(out, dst, variables, f"{src}/ffn")
    _layer_norm(out, "model.decoder.layer_norm", variables, "decoder/layer_norm")

    # Output projection: normally an alias of the embeddings (tied), but keep it if it really differs.
    tied = True
    if "decoder/projection/weight" in variables:
        projection = variables.tensor("decoder/projection/weight")
        if not (projection is raw["decoder/embeddings/weight"] or np.array_equal(projection, embeddings)):
            tied = False
            out["proj_out.weight"] = projection
    if "decoder/projection/bias" in variables and np.any(variables.tensor("decoder/projection/bias")):
        raise CT2FormatError("the output projection has a bias; transformers' Whisper cannot represent it")

    leftovers = variables.leftovers()
    if leftovers:
        raise CT2FormatError(f"unmapped CT2 variables (refusing a lossy conversion): {leftovers}")

    d_model = embeddings.shape[1]
    conv1 = out["model.encoder.conv1.weight"]
    dims = WhisperDims(
        vocab_size=embeddings.shape[0],
        num_mel_bins=conv1.shape[1],
        d_model=d_model,
        encoder_layers=encoder_layers,
        decoder_layers=decoder_layers,
        # Whisper's head size is always 64; older specs did not store the head count.
        encoder_attention_heads=variables.scalar("encoder/num_heads", d_model // 64),
        decoder_attention_heads=variables.scalar("decoder/num_heads", d_model // 64),
        encoder_ffn_dim=out["model.encoder.layers.0.fc1.weight"].shape[0] if encoder_layers else 4 * d_model,
        decoder_ffn_dim=out["model.decoder.layers.0.fc1.weight"].shape[0] if decoder_layers else 4 * d_model,
        max_source_positions=out["model.encoder.embed_positions.weight"].shape[0],
        max_target_positions=out["model.decoder.embed_positions.weight"].shape[0],
        activation_function=activation,
    )
    return WhisperWeights(dims=dims, state_dict=out, tie_word_embeddings=tied)


# --------------------------------------------------------------------------------------------- tokenizer


@dataclass(frozen=True)
class WhisperSpecialTokens:
    """Ids of Whisper's control tokens, read from the tokenizer (they differ between .en and multilingual)."""

    eot: int
    sot: int
    translate: int
    transcribe: int
    prev_sot: int
    no_timestamps: int
    languages: dict[str, int]

    @property
    def first_timestamp(self) -> int:
        # Timestamp tokens follow <|notimestamps|> directly.
        return self.no_timestamps + 1


def timestamp_tokens() -> list[str]:
    """``<|0.00|>`` .. ``<|30.00|>``, in id order."""
    return [f"<|{i * TIME_PRECISION:.2f}|>" for i in range(NUM_TIMESTAMP_TOKENS)]


def _special_tokens(added_tokens: list[dict[str, Any]]) -> WhisperSpecialTokens:
    by_content = {token["content"]: token["id"] for token in added_tokens}
    names = ("endoftext", "startoftranscript", "translate", "transcribe", "startofprev", "notimestamps")
    missing = [name for name in names if f"<|{name}|>" not in by_content]
    if missing:
        raise CT2FormatError(f"tokenizer.json lacks the Whisper special tokens {missing}")
    ids = {name: by_content[f"<|{name}|>"] for name in names}
    return WhisperSpecialTokens(
        eot=ids["endoftext"],
        sot=ids["startoftranscript"],
        translate=ids["translate"],
        transcribe=ids["transcribe"],
        prev_sot=ids["startofprev"],
        no_timestamps=ids["notimestamps"],
        # Language tokens sit between <|startoftranscript|> and <|translate|>.
        languages={
            content: token_id
            for content, token_id in by_content.items()
            if ids["startoftranscript"] < token_id < ids["translate"]
        },
    )


def _read_tokenizer_json(src_dir: Path) -> dict[str, Any]:
    return json.loads((Path(src_dir) / "tokenizer.json").read_text(encoding="utf-8"))


def read_special_tokens(src_dir: Path) -> WhisperSpecialTokens:
    """The control token ids of the CT2 model in ``src_dir``."""
    return _special_tokens(_read_tokenizer_json(src_dir).get("added_tokens", []))


def _check_against_vocabulary(src_dir: Path, tokens: dict[int, str], vocab_size: int) -> None:
    # vocabulary.txt lists every token (timestamps included) by id: the ground truth for our ids.
    path = src_dir / "vocabulary.txt"
    if not path.is_file():
        return
    lines = path.read_bytes().decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != vocab_size:
        raise CT2FormatError(f"vocabulary.txt has {len(lines)} tokens but the model has {vocab_size}")
    for token_id, content in tokens.items():
        if lines[token_id] != content:
            raise CT2FormatError(
                f"token {token_id} is {content!r} in tokenizer.json but {lines[token_id]!r} in vocabulary.txt"
            )


def build_whisper_tokenizer(src_dir: Path, vocab_size: int) -> Any:
    """A ``WhisperTokenizerFast`` from CT2's ``tokenizer.json``, with the timestamp tokens put back.

    ``vocab_size`` is the number of rows of the model's embeddings; the timestamps must fill it exactly.
    """
    # transformers 5 keeps the "Fast" name as an alias of its single, tokenizers-backed WhisperTokenizer.
    from transformers import WhisperTokenizerFast  # type: ignore[attr-defined]

    src_dir = Path(src_dir)
    data = _read_tokenizer_json(src_dir)
    added: list[dict[str, Any]] = data.setdefault("added_tokens", [])
    special = _special_tokens(added)

    if special.first_timestamp + NUM_TIMESTAMP_TOKENS != vocab_size:
        raise CT2FormatError(
            f"expected the vocabulary to end with {NUM_TIMESTAMP_TOKENS} timestamp tokens after id "
            f"{special.no_timestamps}, but the embeddings have {vocab_size} rows"
        )
    wanted = dict(zip(timestamp_tokens(), range(special.first_timestamp, vocab_size), strict=True))
    existing = {token["content"]: token["id"] for token in added}
    clashes = [c for c, i in existing.items() if i >= special.first_timestamp and wanted.get(c) != i]
    if clashes:
        raise CT2FormatError(f"tokenizer.json already uses timestamp ids for {clashes[:5]}")
    for content, token_id in wanted.items():
        if content not in existing:
            # Not special: Whisper's tokenizer finds timestamps as ids above its last special token, and
            # decode(skip_special_tokens=True) must not drop them before offsets are computed.
            added.append(
                {
                    "id": token_id,
                    "content": content,
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "special": False,
                }
            )
    _check_against_vocabulary(src_dir, {token["id"]: token["content"] for token in added}, vocab_size)

    # In id order, ending with <|notimestamps|>: transformers takes the last special id + 1 as the first
    # timestamp id.
    specials = [token["content"] for token in sorted(added, key=lambda t: t["id"]) if token.get("special")]
    with tempfile.TemporaryDirectory() as staging:
        staged = Path(staging) / "tokenizer.json"
        staged.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        tokenizer = WhisperTokenizerFast(
            tokenizer_file=str(staged),
            extra_special_tokens=specials,
            unk_token="<|endoftext|>",
            bos_token="<|endoftext|>",
            eos_token="<|endoftext|>",
            pad_token="<|endoftext|>",
        )
    if tokenizer.all_special_ids[-1] != special.no_timestamps or len(tokenizer) != vocab_size:
        raise CT2FormatError(
            f"rebuilt tokenizer is inconsistent: {len(tokenizer)} tokens, "
            f"last special id {tokenizer.all_special_ids[-1]} (expected {special.no_timestamps})"
        )
    return tokenizer


# --------------------------------------------------------------------------------------------- writing


def _read_ct2_config(src_dir: Path) -> dict[str, Any]:
    path = src_dir / "config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _generation_config(dims: WhisperDims, special: WhisperSpecialTokens, ct2_config: dict[str, Any]) -> Any:
    from transformers import GenerationConfig

    multilingual = dims.vocab_size >= MULTILINGUAL_VOCAB_SIZE
    extra: dict[str, Any] = {}
    heads = ct2_config.get("alignment_heads")
    if heads:
        # The cross-attention heads that follow the audio: word-level timestamps use them for DTW. Left out
        # when unknown, so transformers reports that word timestamps are unavailable instead of guessing.
        extra["alignment_heads"] = [[int(layer), int(head)] for layer, head in heads]
    if multilingual:
        lang_to_id = dict(special.languages)
        for token, alias in _LANGUAGE_TOKEN_ALIASES.items():
            if token in lang_to_id and alias not in lang_to_id:
                lang_to_id[alias] = lang_to_id[token]
        extra |= {
            "lang_to_id": lang_to_id,
            "task_to_id": {"translate": special.translate, "transcribe": special.transcribe},
            # Without a task the prompt carries no task token and the model picks one itself, sometimes
            # translating; the service transcribes in the spoken language unless a caller asks otherwise.
            "task": "transcribe",
        }
    return GenerationConfig(
        decoder_start_token_id=special.sot,
        bos_token_id=special.eot,
        eos_token_id=special.eot,
        pad_token_id=special.eot,
        max_length=dims.max_target_positions,
        # Greedy by default: the service favours latency; callers may still ask for beams.
        num_beams=1,
        do_sample=False,
        suppress_tokens=list(ct2_config.get("suppress_ids") or []),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or [220, special.eot]),
        no_timestamps_token_id=special.no_timestamps,
        prev_sot_token_id=special.prev_sot,
        max_initial_timestamp_index=MAX_INITIAL_TIMESTAMP_INDEX,
        is_multilingual=multilingual,
        return_timestamps=False,
        **extra,
    )


def _model_config(
    dims: WhisperDims, special: WhisperSpecialTokens, tied: bool, ct2_config: dict[str, Any]
) -> Any:
    from transformers import WhisperConfig

    return WhisperConfig(
        vocab_size=dims.vocab_size,
        num_mel_bins=dims.num_mel_bins,
        d_model=dims.d_model,
        encoder_layers=dims.encoder_layers,
        decoder_layers=dims.decoder_layers,
        encoder_attention_heads=dims.encoder_attention_heads,
        decoder_attention_heads=dims.decoder_attention_heads,
        encoder_ffn_dim=dims.encoder_ffn_dim,
        decoder_ffn_dim=dims.decoder_ffn_dim,
        max_source_positions=dims.max_source_positions,
        max_target_positions=dims.max_target_positions,
        activation_function=dims.activation_function,
        decoder_start_token_id=special.sot,
        bos_token_id=special.eot,
        eos_token_id=special.eot,
        pad_token_id=special.eot,
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or [220, special.eot]),
        tie_word_embeddings=tied,
        architectures=["WhisperForConditionalGeneration"],
        dtype="float32",
    )


def _check_keys(config: Any, state_dict: dict[str, np.ndarray], tied: bool) -> None:
    # Build the model on the meta device (no memory, no init) only to learn the names it will load.
    import torch
    from transformers import WhisperForConditionalGeneration

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    if tied:
        expected.pop("proj_out.weight", None)
    got = {name: tuple(array.shape) for name, array in state_dict.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))
        unexpected = sorted(set(got) - set(expected))
        wrong = sorted(n for n in set(got) & set(expected) if got[n] != expected[n])
        raise CT2FormatError(f"state dict mismatch: missing={missing} unexpected={unexpected} shape={wrong}")


def write_hf_whisper(
    src_dir: Path, out_dir: Path, *, model_files: Sequence[Path] | None = None
) -> WhisperDims:
    """Write the transformers model, tokenizer, processor and generation config into an existing empty dir.

    Not atomic: use `convert_ct2_whisper` unless you manage the directory's publication yourself.
    """
    from safetensors.numpy import save_file
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    src_dir = Path(src_dir)
    out_dir = Path(out_dir)
    weights = ct2_whisper_to_hf_state_dict(read_ct2_variables(model_files or [src_dir / "model.bin"]))
    dims = weights.dims
    ct2_config = _read_ct2_config(src_dir)
    special = read_special_tokens(src_dir)
    tokenizer = build_whisper_tokenizer(src_dir, dims.vocab_size)

    config = _model_config(dims, special, weights.tie_word_embeddings, ct2_config)
    _check_keys(config, weights.state_dict, weights.tie_word_embeddings)
    tensors = {name: np.ascontiguousarray(array) for name, array in weights.state_dict.items()}
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out_dir)
    _generation_config(dims, special, ct2_config).save_pretrained(out_dir)

    feature_extractor = WhisperFeatureExtractor(feature_size=dims.num_mel_bins, sampling_rate=SAMPLING_RATE)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out_dir)
    return dims


@dataclass(frozen=True)
class _Staging:
    """A sibling temp dir, so the final rename stays on one filesystem and is atomic."""

    final: Path
    temp: Path

    @classmethod
    def beside(cls, final: Path) -> _Staging:
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        # mkdtemp makes the dir private (0700); the published model should be readable like any other.
        temp.chmod(0o755)
        return cls(final=final, temp=temp)

    def publish(self, *, overwrite: bool) -> None:
        if overwrite and self.final.exists():
            # Move the old tree aside first: rename cannot replace a non-empty directory.
            trash = self.final.parent / f".{self.final.name}.old-{os.getpid()}-{time.monotonic_ns()}"
            os.rename(self.final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(self.temp, self.final)
        except OSError as exc:
            if self.final.exists():
                raise FileExistsError(f"{self.final} appeared while converting") from exc
            raise

    def discard(self) -> None:
        shutil.rmtree(self.temp, ignore_errors=True)


def convert_ct2_whisper(
    src_dir: Path,
    dst_dir: Path,
    *,
    model_files: Sequence[Path] | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert the CT2 Whisper model in ``src_dir`` into a transformers model directory at ``dst_dir``.

    ``model_files`` replaces ``src_dir/model.bin`` for models shipped as split parts (read in order).
    The result is built in a temp dir beside ``dst_dir`` and renamed into place, so readers never see a
    half-written model. Raises FileExistsError if ``dst_dir`` exists (or appears meanwhile) and not
    ``overwrite``.
    """
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if dst_dir.exists() and not overwrite:
        raise FileExistsError(f"{dst_dir} already exists")
    staging = _Staging.beside(dst_dir)
    try:
        write_hf_whisper(src_dir, staging.temp, model_files=model_files)
        staging.publish(overwrite=overwrite)
    except BaseException:
        staging.discard()
        raise
    return dst_dir
