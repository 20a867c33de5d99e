"""Work abandoned while it runs in a model process stops there (batching/model_process.py `watching`): a
caller that cancels, or whose deadline passes, frees the replica at the next check of abandon.py, as on a
worker thread of the server process, and the work counts as skipped."""

from __future__ import annotations

import asyncio
import functools
import tempfile
import time
from pathlib import Path

import pytest
from harness import wait_for
from model_cache import cached_model
from pipelined_server.errors import DeadlineExpired
from serving import Serving, echo, spec, work_until_abandoned
from tiny_text_models import build_tiny_bert

pytestmark = pytest.mark.timeout(180)

MODEL = "tiny-sentiment"
# The work runs 60 s unless stopped; stopped, the next call answers within this (a check every 10 ms, the
# pipe, a loaded machine).
STOPPED_WITHIN_S = 10.0


def served() -> Serving:
    return Serving([spec(MODEL, "text-classification", cached_model(build_tiny_bert, head="sequence"))])


def skipped(serving: Serving, reason: str) -> float:
    return serving.metrics.value("pipelined_requests_skipped_total", {"model": MODEL, "reason": reason})


@pytest.mark.parametrize("leaves_by", ["cancel", "deadline"])
def test_work_whose_caller_left_stops_in_the_model_process(leaves_by: str) -> None:
    async def scenario() -> None:
        async with served() as serving:
            instance = serving.registry.find(MODEL)
            assert instance.processes, "the model runs in a process of its own"
            scheduler = instance.scheduler
            assert scheduler is not None
            started = Path(tempfile.mkdtemp(prefix="abandon-")) / "started"
            before = skipped(serving, "cancelled" if leaves_by == "cancel" else "deadline")
            work = functools.partial(work_until_abandoned, started)
            timeout = 1.0 if leaves_by == "deadline" else None
            job = asyncio.ensure_future(scheduler.submit_call(work, timeout=timeout))
            await asyncio.to_thread(wait_for, started.exists, 60, "the work starting in the child")
            left_at = time.monotonic()
            if leaves_by == "cancel":
                job.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await job
            else:
                with pytest.raises(DeadlineExpired, match="the work stopped"):
                    await job
            # The replica is free again long before the 60 s the work would take.
            assert await scheduler.submit_call(functools.partial(echo, "next")) == "next"
            assert time.monotonic() - left_at < STOPPED_WITHIN_S
            reason = "cancelled" if leaves_by == "cancel" else "deadline"
            await asyncio.to_thread(
                wait_for, lambda: skipped(serving, reason) == before + 1, 10, "the work counted as skipped"
            )

    asyncio.run(scenario())
