"""Tiny, randomly initialised vision, multimodal and audio models that load offline like real checkpoints.

Each builder writes a complete model directory (weights, config, tokenizer and/or processor) so that
``transformers.pipeline(task, model=str(path))`` loads it without any download. Seeds are fixed, so the
same arguments give the same files. The outputs mean nothing: only their shape and their parity between
the server and the in-process pipeline matter.

Image processors are the slow (PIL/numpy) ones: the fast ones need torchvision, which is not installed.
Tokenizers are hand-written: a character-level BPE (CLIP, RoBERTa-style) or a word-piece vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from tiny_models import bytes_to_unicode

IMAGE_SIZE = 32
AUDIO_RATE = 16000
_WORDS = [
    "a",
    "an",
    "the",
    "cat",
    "dog",
    "bird",
    "car",
    "house",
    "tree",
    "photo",
    "picture",
    "of",
    "is",
    "what",
    "who",
    "where",
    "color",
    "red",
    "blue",
    "green",
    "invoice",
    "total",
    "date",
    "name",
    "number",
    "sound",
    "music",
    "speech",
    "noise",
]


def tiny_image(seed: int = 0, size: tuple[int, int] = (40, 30)) -> Any:
    """A deterministic RGB PIL image with some structure (gradients plus noise)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), (x + y) * 127 / max(w + h - 2, 1)], -1)
    noisy = np.clip(base + rng.normal(0, 40, size=base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy, "RGB")


def _seeded(seed: int) -> Any:
    import torch

    torch.manual_seed(seed)
    return torch


def _labels(n: int) -> tuple[dict[int, str], dict[str, int]]:
    id2label = {i: f"label_{i}" for i in range(n)}
    return id2label, {v: k for k, v in id2label.items()}


# --------------------------------------------------------------------------------------- tokenizers


def clip_tokenizer() -> Any:
    """A CLIP tokenizer over single characters (plus their end-of-word forms) and a few merged words."""
    from transformers import CLIPTokenizer

    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in [*chars, *(c + "</w>" for c in chars)]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in _WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            merged = current + piece
            if merged not in vocab:
                merges.append((current, piece))
                vocab[merged] = len(vocab)
            current = merged
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges)


def roberta_tokenizer() -> Any:
    """A byte-level BPE tokenizer in RoBERTa's layout (<s> <pad> </s> <unk> first, <mask> last)."""
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in bytes_to_unicode().values():
        vocab.setdefault(ch, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in _WORDS:
        pieces = ["Ġ", *word]
        current = pieces[0]
        for piece in pieces[1:]:
            merged = current + piece
            if merged not in vocab:
                merges.append((current, piece))
                vocab[merged] = len(vocab)
            current = merged
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=merges)


def wordpiece_vocab() -> dict[str, int]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)] + list(".,:?$-/")
    tokens = specials + _WORDS + letters + ["##" + c for c in letters]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab


# ------------------------------------------------------------------------------------------- vision


def _vit_processor(cls_name: str = "ViTImageProcessor", **kwargs: Any) -> Any:
    import transformers

    cls = getattr(transformers, cls_name)
    return cls(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, **kwargs)


def _vit_config(**kwargs: Any) -> Any:
    from transformers import ViTConfig

    return ViTConfig(
        image_size=IMAGE_SIZE,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        **kwargs,
    )


def build_tiny_image_classifier(path: Path, seed: int = 0) -> Path:
    """ViTForImageClassification with 5 labels."""
    from transformers import ViTForImageClassification

    _seeded(seed)
    id2label, label2id = _labels(5)
    model = ViTForImageClassification(_vit_config(id2label=id2label, label2id=label2id)).eval()
    model.save_pretrained(path)
    _vit_processor().save_pretrained(path)
    return Path(path)


def build_tiny_image_feature_extractor(path: Path, seed: int = 0) -> Path:
    """ViTModel with a pooler (for `pool=True`)."""
    from transformers import ViTModel

    _seeded(seed)
    model = ViTModel(_vit_config(), add_pooling_layer=True).eval()
    model.save_pretrained(path)
    _vit_processor().save_pretrained(path)
    return Path(path)


def build_tiny_object_detector(path: Path, seed: int = 0) -> Path:
    """YOLOS (a ViT with detection tokens): no CNN backbone to configure. The class head's bias favours
    real classes over "no object" so random boxes clear moderate thresholds."""
    import torch
    from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessor

    _seeded(seed)
    id2label, label2id = _labels(3)
    config = YolosConfig(
        image_size=[IMAGE_SIZE, IMAGE_SIZE],
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_detection_tokens=6,
        id2label=id2label,
        label2id=label2id,
    )
    model = YolosForObjectDetection(config).eval()
    with torch.no_grad():
        layer = model.class_labels_classifier.layers[-1]
        layer.weight.mul_(20.0)
        layer.bias[-1] = -2.0
        # Zero-initialised detection tokens would all predict the same box.
        model.vit.embeddings.detection_tokens.normal_(0.0, 1.0)
    model.save_pretrained(path)
    processor = YolosImageProcessor(size={"shortest_edge": IMAGE_SIZE, "longest_edge": 2 * IMAGE_SIZE})
    processor.save_pretrained(path)
    return Path(path)


def build_tiny_semantic_segmenter(path: Path, seed: int = 0) -> Path:
    """SegFormer (semantic segmentation) with 3 labels."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    _seeded(seed)
    id2label, label2id = _labels(3)
    config = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[16, 32],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=32,
        id2label=id2label,
        label2id=label2id,
    )
    model = SegformerForSemanticSegmentation(config).eval()
    model.save_pretrained(path)
    SegformerImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(path)
    return Path(path)


def build_tiny_depth_estimator(path: Path, seed: int = 0) -> Path:
    """DPT (ViT backbone, no hybrid) for depth estimation."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    _seeded(seed)
    config = DPTConfig(
        image_size=IMAGE_SIZE,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 8, 16, 16],
        fusion_hidden_size=16,
        head_in_index=-1,
    )
    model = DPTForDepthEstimation(config).eval()
    model.save_pretrained(path)
    DPTImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, keep_aspect_ratio=False
    ).save_pretrained(path)
    return Path(path)


def build_tiny_clip(path: Path, seed: int = 0) -> Path:
    """CLIP for zero-shot image classification."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    _seeded(seed)
    tokenizer = clip_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
        projection_dim=16,
    )
    model = CLIPModel(config).eval()
    model.save_pretrained(path)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return Path(path)


def build_tiny_owlvit(path: Path, seed: int = 0) -> Path:
    """OWL-ViT for zero-shot object detection."""
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor

    _seeded(seed)
    tokenizer = clip_tokenizer()
    config = OwlViTConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
        projection_dim=32,
    )
    model = OwlViTForObjectDetection(config).eval()
    model.save_pretrained(path)
    image_processor = OwlViTImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    OwlViTProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return Path(path)


# ------------------------------------------------------------------------------------------- audio


def build_tiny_audio_classifier(path: Path, seed: int = 0) -> Path:
    """Wav2Vec2ForSequenceClassification with 4 labels."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    _seeded(seed)
    id2label, label2id = _labels(4)
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32, 32),
        conv_stride=(5, 4),
        conv_kernel=(10, 4),
        num_feat_extract_layers=2,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=16,
        id2label=id2label,
        label2id=label2id,
    )
    model = Wav2Vec2ForSequenceClassification(config).eval()
    model.save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=AUDIO_RATE, return_attention_mask=True).save_pretrained(path)
    return Path(path)


def build_tiny_clap(path: Path, seed: int = 0) -> Path:
    """CLAP for zero-shot audio classification (RoBERTa-style text tower, HTS-AT audio tower)."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    _seeded(seed)
    tokenizer = roberta_tokenizer()
    config = ClapConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "projection_dim": 16,
        },
        audio_config={
            "spec_size": 64,
            "patch_size": 4,
            "patch_stride": [4, 4],
            "num_mel_bins": 16,
            "window_size": 2,
            "depths": [1, 1],
            "num_attention_heads": [2, 2],
            "patch_embeds_hidden_size": 16,
            "hidden_size": 32,
            "projection_dim": 16,
            "enable_fusion": False,
        },
        projection_dim=16,
    )
    model = ClapModel(config).eval()
    model.save_pretrained(path)
    extractor = ClapFeatureExtractor(
        feature_size=16, sampling_rate=AUDIO_RATE, max_length_s=2, hop_length=160, truncation="rand_trunc"
    )
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(path)
    return Path(path)


def build_tiny_vits(path: Path, seed: int = 0) -> Path:
    """VITS text-to-speech with a character vocabulary; noise scales at 0 so synthesis is deterministic."""
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    _seeded(seed)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    chars = ["<pad>", "<unk>", " ", *[chr(c) for c in range(ord("a"), ord("z") + 1)], ".", ",", "?", "!"]
    vocab_file = path / "vocab.json"
    vocab_file.write_text(json.dumps({c: i for i, c in enumerate(chars)}))
    tokenizer = VitsTokenizer(str(vocab_file), add_blank=True, normalize=True, phonemize=False)
    config = VitsConfig(
        vocab_size=len(chars),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        ffn_dim=32,
        flow_size=16,
        spectrogram_bins=33,
        upsample_initial_channel=16,
        upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        prior_encoder_num_flows=2,
        prior_encoder_num_wavenet_layers=1,
        duration_predictor_filter_channels=16,
        use_stochastic_duration_prediction=False,
        noise_scale=0.0,
        noise_scale_duration=0.0,
        sampling_rate=AUDIO_RATE,
    )
    model = VitsModel(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# -------------------------------------------------------------------------------------- multimodal

# A plain chat template: "<role>: <content>" lines, images as the processor's <image> token.
_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


def build_tiny_llava(path: Path, seed: int = 0) -> Path:
    """LLaVA (CLIP vision tower + Llama text model) for image-text-to-text, with a byte-level BPE tokenizer
    that knows <image> and a plain chat template. Generation is greedy and short."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    _seeded(seed)
    tokenizer = roberta_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(
        image_size=IMAGE_SIZE,
        patch_size=8,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        max_new_tokens=8,
        do_sample=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(path)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=_CHAT_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(path)
    return Path(path)


def build_tiny_layoutlm(path: Path, seed: int = 0) -> Path:
    """LayoutLM (v1: text + 2-D positions, no pixels) for document question answering over given word boxes."""
    from transformers import LayoutLMConfig, LayoutLMForQuestionAnswering, LayoutLMTokenizer

    _seeded(seed)
    tokenizer = LayoutLMTokenizer(vocab=wordpiece_vocab(), model_max_length=128)
    config = LayoutLMConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        max_2d_position_embeddings=1024,
    )
    model = LayoutLMForQuestionAnswering(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)
