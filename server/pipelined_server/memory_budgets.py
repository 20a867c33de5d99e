"""The start-up check that every model fits the memory budgets (`max_memory`) its config declares: a
config that cannot fit is refused before anything loads, with the key path, instead of a model failing
to load (or the machine swapping) later."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from .config import ModelSpec
from .errors import ConfigError
from .loading import resolve_source
from .memory import checkpoint_bytes, device_key, human

log = logging.getLogger(__name__)


def check_budgets(models: Sequence[ModelSpec]) -> None:
    """Refuses (ConfigError naming the key path) a model whose weights cannot fit the budgets its
    `max_memory` declares: all of them together, or the one device it is placed on, when no offload folder
    can take the rest. Models without budgets, or whose size cannot be read locally (a Hub id), pass."""
    for index, spec in enumerate(models):
        if not spec.max_memory:
            continue
        where = f"models[{index}].max_memory"
        source = Path(resolve_source(spec.source))
        needed = checkpoint_bytes(source, spec.dtype) if source.is_dir() else None
        if needed is None:
            log.warning(
                "%s: cannot size %s before loading; its budget is checked by the loader", where, source
            )
            continue
        if spec.device == "auto":
            if spec.offload_folder:
                continue  # what does not fit the budgets goes to disk
            budget = sum(spec.max_memory.values())
            devices = ", ".join(f"{d} {human(b)}" for d, b in spec.max_memory.items())
        else:
            placed = [device_key(d) for d in spec.devices or (spec.device,)]
            # Copies on one device (devices: [cpu, cpu]) share its budget.
            short = [
                d for d in dict.fromkeys(placed) if needed * placed.count(d) > spec.max_memory.get(d, 2**63)
            ]
            if not short:
                continue
            needed *= placed.count(short[0])
            budget = spec.max_memory[short[0]]
            devices = f"{short[0]} {human(budget)}" + (
                f" for {placed.count(short[0])} copies" if placed.count(short[0]) > 1 else ""
            )
        if needed > budget:
            raise ConfigError(
                f"{where}: model {spec.name!r} needs at least {human(needed)} of weights ({spec.dtype}) but "
                f"its budget is {human(budget)} ({devices})"
                + ("; set offload_folder to offload the rest to disk" if spec.device == "auto" else "")
            )
