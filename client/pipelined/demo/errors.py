"""Every failure a demo handler can meet, as a `gr.Error` the page shows as a message (never a stack
trace): server errors with their status and message, bad input the SDK rejects before sending, and
anything unexpected (logged here with its traceback, shown there in one line)."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr

from ..errors import PipelinedError

log = logging.getLogger("pipelined.demo")
F = TypeVar("F", bound=Callable[..., Any])
# How long a message stays on screen (seconds); None keeps it until closed.
MESSAGE_S = 15


def as_message(error: BaseException) -> gr.Error:
    """The message the page shows for an error."""
    if isinstance(error, gr.Error):
        return error
    if isinstance(error, PipelinedError):
        # "INVALID_ARGUMENT: audio could not be decoded: ...", as the SDK's exception reads.
        return gr.Error(str(error), duration=MESSAGE_S, print_exception=False)
    if isinstance(error, ValueError | TypeError | OSError):
        # Refused before anything was sent (a missing file, an argument the call does not take, ...).
        return gr.Error(f"invalid input: {error}", duration=MESSAGE_S, print_exception=False)
    log.exception("demo handler failed", exc_info=error)
    return gr.Error(f"demo error: {type(error).__name__}: {error}", duration=MESSAGE_S)


def readable(fn: F) -> F:
    """Wraps a handler (plain or generator) so that what it raises reaches the page as `as_message`."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except Exception as error:
                raise as_message(error) from None

        return generator  # type: ignore[return-value]

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            raise as_message(error) from None

    return plain  # type: ignore[return-value]
