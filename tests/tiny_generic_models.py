"""Tiny random models of tasks that only the generic call serves (no typed call), built offline at test time.

Like the other tiny builders, each writes a directory that `pipeline(task, model=dir)` loads without the
Hub; weights are random with a fixed seed, so outputs mean nothing but are deterministic.
"""

from __future__ import annotations

from pathlib import Path

from tiny_vision_models import wordpiece_vocab

# Words of the test tables and queries, so they tokenize into whole words rather than letters.
TABLE_WORDS = [
    "actors",
    "age",
    "movies",
    "brad",
    "pitt",
    "leonardo",
    "george",
    "clooney",
    "how",
    "many",
    "old",
]
# TAPAS's aggregation heads, as in the WTQ checkpoints.
AGGREGATIONS = {0: "NONE", 1: "SUM", 2: "AVERAGE", 3: "COUNT"}


def build_tiny_tapas(path: Path, seed: int = 3) -> Path:
    """TapasForQuestionAnswering with cell selection and an aggregation head, over a WordPiece vocabulary.

    The default seed gives answers that differ by query (sequential mode), by `sequential` and with
    aggregators (most seeds pick the same cells whatever the query), so parity checks on it mean something.
    """
    import torch
    from transformers import TapasConfig, TapasForQuestionAnswering, TapasTokenizer

    torch.manual_seed(seed)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = list(wordpiece_vocab())
    vocab += [word for word in TABLE_WORDS if word not in vocab]
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    tokenizer = TapasTokenizer(str(vocab_file), model_max_length=128)
    config = TapasConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_aggregation_labels=len(AGGREGATIONS),
        aggregation_labels=AGGREGATIONS,
        no_aggregation_label_index=0,
        use_answer_as_supervision=True,
        # Wider than 0.02, so random cell logits spread around the 0.5 selection threshold.
        initializer_range=0.5,
    )
    model = TapasForQuestionAnswering(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_videomae(path: Path, seed: int = 0) -> Path:
    """VideoMAEForVideoClassification over 4 frames of 32x32 (slow image processor: no torchvision here)."""
    import torch
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEImageProcessor

    torch.manual_seed(seed)
    config = VideoMAEConfig(
        image_size=32,
        patch_size=16,
        num_frames=4,
        tubelet_size=2,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        id2label={i: f"label_{i}" for i in range(4)},
        label2id={f"label_{i}": i for i in range(4)},
    )
    VideoMAEForVideoClassification(config).eval().save_pretrained(path)
    VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        path
    )
    return Path(path)


def write_tiny_video(path: Path, frames: int = 8, seed: int = 0) -> Path:
    """An MPEG-4 clip of random 48x32 frames at 8 fps."""
    import av
    import numpy as np

    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return Path(path)
