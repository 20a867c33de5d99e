"""Submits every input of a request to its model's scheduler and gathers the outputs in order."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from ..batching import gather_or_cancel
from ..registry import ModelInstance


@dataclass(frozen=True)
class Item:
    """One pipeline input with the batching rule its adapter chose."""

    payload: Any
    key: Hashable = None
    batchable: bool = True


async def run_items(
    instance: ModelInstance, items: Sequence[Item], kwargs: dict[str, Any], timeout: float | None
) -> list[Any]:
    """Each item goes to the scheduler on its own, so items of this and other requests batch together."""
    assert instance.scheduler is not None
    scheduler = instance.scheduler
    scheduler.ensure_room(len(items))
    return await gather_or_cancel(
        scheduler.submit(i.payload, kwargs, key=i.key, batchable=i.batchable, timeout=timeout) for i in items
    )
