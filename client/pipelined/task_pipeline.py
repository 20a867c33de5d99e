"""The call semantics every non-ASR task shares: one input -> one result, a list -> a list, an iterator ->
a generator with at most `max_in_flight` requests in flight, results in input order. Each input is its
own request; the server batches requests together where that cannot change a result."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from .errors import from_rpc_error

if TYPE_CHECKING:
    from .client import Stubs

DEFAULT_MAX_IN_FLIGHT = 4


class TaskPipeline:
    """Subclasses say which stub method to call, which arguments they accept, and how to convert."""

    task: str = ""
    # Call arguments accepted (beyond the input); others raise TypeError as transformers would.
    accepted: frozenset[str] = frozenset()

    def __init__(
        self, client: Stubs, model: str | None, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, **defaults: Any
    ):
        self._check(defaults)
        self.client = client
        self.model = model or ""
        self.defaults = defaults
        self.max_in_flight = max_in_flight

    def _check(self, kwargs: dict[str, Any]) -> None:
        unknown = set(kwargs) - self.accepted
        if unknown:
            raise TypeError(f"unsupported {self.task} argument(s): {', '.join(sorted(unknown))}")

    # ---- per task
    def method(self) -> Any:
        """The unary stub method of `self.client`: the sync client's (callable, with `.future`) or the
        asyncio client's (awaited by the asyncio twin)."""
        raise NotImplementedError

    def arguments(self, inputs: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """A call's input(s) and call arguments (defaults merged, checked) as the pipeline reads them;
        tasks whose call takes more positional arguments say how."""
        merged = {**self.defaults, **kwargs}
        self._check(merged)
        return inputs, merged

    def is_single(self, inputs: Any) -> bool:
        raise NotImplementedError

    def request(self, inputs: Any, kwargs: dict[str, Any]) -> Any:
        raise NotImplementedError

    def result(self, response: Any, inputs: Any, kwargs: dict[str, Any]) -> Any:
        raise NotImplementedError

    # ---- shared
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        inputs, merged = self.arguments(*args, **kwargs)
        if self.is_single(inputs):
            return self._one(inputs, merged)
        if isinstance(inputs, list | tuple):
            return list(self._many(inputs, merged))
        if isinstance(inputs, Iterable):
            return self._many(inputs, merged)
        raise TypeError(f"unsupported input of type {type(inputs).__name__}")

    def _one(self, inputs: Any, kwargs: dict[str, Any]) -> Any:
        try:
            response = self.method()(self.request(inputs, kwargs), timeout=self.client.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return self.result(response, inputs, kwargs)

    def _many(self, inputs: Iterable[Any], kwargs: dict[str, Any]) -> Iterator[Any]:
        pending: deque[tuple[Any, Any]] = deque()
        try:
            for item in inputs:
                future = self.method().future(self.request(item, kwargs), timeout=self.client.timeout)
                pending.append((item, future))
                if len(pending) >= self.max_in_flight:
                    yield self._finish(*pending.popleft(), kwargs)
            while pending:
                yield self._finish(*pending.popleft(), kwargs)
        finally:
            for _, future in pending:
                future.cancel()

    def _finish(self, item: Any, future: Any, kwargs: dict[str, Any]) -> Any:
        try:
            response = future.result()
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return self.result(response, item, kwargs)
