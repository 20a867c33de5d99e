"""Pipeline results (the transformers output shapes the SDK returns) -> the values Gradio components
show. One place, shared by the tabs and by `interface(pipe)`."""

from __future__ import annotations

from typing import Any

import numpy as np

# Inferno-like anchors (near -> far reads dark -> bright) for depth maps; matplotlib is not a dependency.
_DEPTH_COLORS = np.array(
    [[0, 0, 4], [66, 10, 104], [147, 38, 103], [221, 81, 58], [252, 165, 10], [252, 255, 164]], dtype=float
)


def label_scores(records: list[dict[str, Any]]) -> dict[str, float]:
    """[{"label", "score"}, ...] -> {label: score} for gr.Label."""
    return {str(r["label"]): float(r["score"]) for r in records}


def zero_shot_scores(result: dict[str, Any]) -> dict[str, float]:
    """zero-shot-classification's {"labels": [...], "scores": [...]} -> {label: score}."""
    return {str(label): float(score) for label, score in zip(result["labels"], result["scores"], strict=True)}


def fill_mask_scores(result: list[Any]) -> dict[str, float]:
    """fill-mask's candidates (of the first mask when the text has several) -> {token: score}."""
    first = result[0] if result and isinstance(result[0], list) else result
    return {str(r["token_str"]).strip() or repr(r["token_str"]): float(r["score"]) for r in first}


def entities(text: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """token-classification's records -> gr.HighlightedText's {"text", "entities"} (character spans)."""
    spans = [
        {"entity": str(r.get("entity_group") or r.get("entity")), "start": r["start"], "end": r["end"]}
        for r in records
        if r.get("start") is not None and r.get("end") is not None
    ]
    return {"text": text, "entities": spans}


def boxes(
    image: Any, records: list[dict[str, Any]]
) -> tuple[Any, list[tuple[tuple[int, int, int, int], str]]]:
    """object-detection records -> gr.AnnotatedImage's (image, [((xmin, ymin, xmax, ymax), label)])."""
    return image, [
        ((int(b["xmin"]), int(b["ymin"]), int(b["xmax"]), int(b["ymax"])), str(r["label"]))
        for r in records
        for b in [r["box"]]
    ]


# Box colours, one per label in order of appearance (RGB).
PALETTE = [
    (239, 68, 68),
    (59, 130, 246),
    (34, 197, 94),
    (234, 179, 8),
    (168, 85, 247),
    (236, 72, 153),
    (20, 184, 166),
]


def label_colors(records: list[dict[str, Any]]) -> dict[str, tuple[int, int, int]]:
    colors: dict[str, tuple[int, int, int]] = {}
    for r in records:
        colors.setdefault(str(r["label"]), PALETTE[len(colors) % len(PALETTE)])
    return colors


def draw_boxes(image: Any, records: list[dict[str, Any]]) -> Any:
    """A copy of the (PIL) image with each detection's box outlined and labelled with its score."""
    from PIL import ImageDraw, ImageFont

    drawn = image.convert("RGB")
    draw = ImageDraw.Draw(drawn)
    width = max(2, round(min(drawn.size) / 150))
    font = ImageFont.load_default(size=max(12, round(min(drawn.size) / 30)))
    colors = label_colors(records)
    for r in records:
        box, color = r["box"], colors[str(r["label"])]
        corners = (box["xmin"], box["ymin"], box["xmax"], box["ymax"])
        draw.rectangle(corners, outline=color, width=width)
        caption = f"{r['label']} {float(r['score']):.2f}"
        left, top, right, bottom = draw.textbbox(
            (box["xmin"] + width, box["ymin"] + width), caption, font=font
        )
        draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=color)
        draw.text((box["xmin"] + width, box["ymin"] + width), caption, fill=(255, 255, 255), font=font)
    return drawn


def detection_rows(records: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            r["label"],
            round(float(r["score"]), 3),
            *(int(r["box"][k]) for k in ("xmin", "ymin", "xmax", "ymax")),
        ]
        for r in records
    ]


DETECTION_COLUMNS = ["label", "score", "xmin", "ymin", "xmax", "ymax"]


def masks(image: Any, records: list[dict[str, Any]]) -> tuple[Any, list[tuple[np.ndarray, str]]]:
    """image-segmentation records (PIL masks) -> gr.AnnotatedImage's (image, [(mask in [0, 1], label)])."""
    out = []
    for r in records:
        mask = np.asarray(r["mask"], dtype=np.float32) / 255.0
        score = r.get("score")
        out.append((mask, str(r["label"]) if score is None else f"{r['label']} ({score:.2f})"))
    return image, out


def depth_colors(result: dict[str, Any]) -> np.ndarray:
    """depth-estimation's "depth" image (grey levels) -> an RGB array, brighter for larger values."""
    grey = np.asarray(result["depth"], dtype=np.float64)
    span = float(grey.max() - grey.min())
    level = (grey - grey.min()) / span if span > 0 else np.zeros_like(grey)
    position = level * (len(_DEPTH_COLORS) - 1)
    low = np.clip(np.floor(position).astype(int), 0, len(_DEPTH_COLORS) - 2)
    frac = (position - low)[..., None]
    rgb = _DEPTH_COLORS[low] * (1 - frac) + _DEPTH_COLORS[low + 1] * frac
    return rgb.astype(np.uint8)


def cosine(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norm if norm else 0.0


def generated_text(result: Any) -> str:
    """text-generation / image-text-to-text output -> the text (the assistant's reply for a chat)."""
    record = result[0] if isinstance(result, list) else result
    text = record["generated_text"]
    if isinstance(text, list):  # a chat: the last message is the reply
        content = text[-1]["content"]
        return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
    return str(text)
