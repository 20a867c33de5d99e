"""A batch of the tasks that skip the DataLoader (loading._DIRECT_TASKS) returns what the pipeline's own list
call returns: same labels and scores, same vectors bit for bit, with padding, text pairs and the call
arguments each task takes."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import torch
from model_cache import cached_model
from pipelined_server.loading import _DIRECT_TASKS, run_batch
from tiny_text_models import build_tiny_bert
from transformers import pipeline

pytestmark = pytest.mark.timeout(180)

TEXTS = ["the movie was great", "awful", "a long and winding road to nowhere in particular, said she", "ok"]
MASKED = ["paris is the [MASK] of france", "the [MASK] was great", "a [MASK]"]


@functools.cache
def model_dir(head: str) -> Path:
    return cached_model(build_tiny_bert, head=head)


@functools.cache
def local(task: str, head: str) -> Any:
    return pipeline(task, model=str(model_dir(head)), device="cpu")


def equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    return bool(a == b)


CASES = [
    ("text-classification", "sequence", TEXTS, {}),
    ("text-classification", "sequence", TEXTS, {"top_k": None, "function_to_apply": "sigmoid"}),
    (
        "text-classification",
        "sequence",
        [{"text": "the movie", "text_pair": "was great"}, {"text": "awful", "text_pair": "it was not"}],
        {"top_k": 2},
    ),
    ("fill-mask", "masked", MASKED, {"top_k": 3}),
    ("fill-mask", "masked", MASKED[:2], {"targets": ["paris", "france", "the"]}),
    ("feature-extraction", "base", TEXTS, {}),
    ("feature-extraction", "base", TEXTS, {"return_tensors": True}),
    ("feature-extraction", "base", TEXTS, {"tokenize_kwargs": {"truncation": True, "max_length": 5}}),
]


def test_the_cases_cover_every_direct_task() -> None:
    assert {task for task, *_ in CASES} == _DIRECT_TASKS


@pytest.mark.parametrize(("task", "head", "items", "kwargs"), CASES)
@pytest.mark.parametrize("batch_size", [None, 8])
def test_a_batch_equals_the_pipelines_list_call(
    task: str, head: str, items: list[Any], kwargs: dict[str, Any], batch_size: int | None
) -> None:
    pipe = local(task, head)
    size = max(len(items), batch_size or 1)
    expected = pipe(list(items), batch_size=size, **kwargs)
    call = dict(kwargs) if batch_size is None else {**kwargs, "batch_size": batch_size}
    got = run_batch(pipe, items, call)
    assert equal(got, expected), (got, expected)


@pytest.mark.parametrize(("task", "head"), sorted({(task, head) for task, head, *_ in CASES}))
def test_a_batch_builds_no_dataloader(task: str, head: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the direct path: the equality above would hold through the pipeline's own list call too."""
    import transformers.pipelines.base as pipelines_base

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a batch of a direct task built a DataLoader")

    monkeypatch.setattr(pipelines_base, "DataLoader", refuse)
    items = MASKED if task == "fill-mask" else TEXTS
    assert len(run_batch(local(task, head), items, {})) == len(items)
    with pytest.raises(AssertionError, match="DataLoader"):  # the list call does build one
        local(task, head)(list(items), batch_size=len(items))
