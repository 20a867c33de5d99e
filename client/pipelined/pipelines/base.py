"""The one remote pipeline: transformers' call semantics over a gRPC call, with one set of steps that
every task family (and its asyncio twin) fills in.

One input -> its result; a list -> a list, in requests of `request_units` (one input per request
unless a family batches, as text does), at most `max_in_flight` requests at once; an iterator -> a
generator (one request per input, bounded in flight, results in input order).

The steps, in call order:
  parse_call(*args, **kwargs) -> (inputs, merged call arguments), checked with check_arguments
  is_single(inputs)           -> one input, or a batch
  request_unit(one) / request_units(items) -> what each request carries
  build_request(unit, kwargs) -> the request proto
  method()                    -> the stub method (sync or asyncio: the asyncio twin awaits it)
  read_results(response, unit, kwargs) -> one result per input of the unit
  present(result, inputs, kwargs) -> the result of a single-input call
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from .. import _transport
from ..errors import Unavailable

DEFAULT_MAX_IN_FLIGHT = 4
# Call arguments of transformers' pipelines that configure its local DataLoader: accepted, and left to the
# server's batching unless the task takes them itself (speech's `batch_size` batches one clip's chunks).
LOADER_ARGUMENTS = ("batch_size", "num_workers")


class Stubs(Protocol):
    """What pipelines use of a client: the service stubs, the call timeout and how a call waits for
    readiness. The synchronous and the asyncio client both have them, so one pipeline class builds requests
    and reads responses for both."""

    timeout: float | None

    def waiting(self, model: str, task: str) -> Any: ...

    speech: Any
    text: Any
    generic: Any
    vision: Any
    multimodal: Any
    audio_tasks: Any


def check_known(task: str, kwargs: dict[str, Any], known: Iterable[str]) -> None:
    unknown = set(kwargs) - set(known)
    if unknown:
        raise TypeError(f"unsupported {task} argument(s) over gRPC: {', '.join(sorted(unknown))}")


def is_dataset(inputs: Any) -> bool:
    """A torch-style dataset (transformers' `KeyDataset`/`KeyPairDataset`, a `torch.utils.data.Dataset`):
    anything with `__len__` and `__getitem__`, found by duck typing so the client imports neither torch
    nor datasets."""
    return hasattr(inputs, "__len__") and hasattr(inputs, "__getitem__")


def iter_dataset(dataset: Any) -> Iterator[Any]:
    for index in range(len(dataset)):
        yield dataset[index]


class RemotePipeline:
    """Subclasses name the task and fill in the steps."""

    task: str = ""
    # Call arguments accepted (beyond the input); others raise TypeError as transformers would.
    accepted: frozenset[str] = frozenset()

    def __init__(
        self, client: Stubs, model: str | None, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, **defaults: Any
    ) -> None:
        self.client = client
        self.model = model or ""
        # `timeout=` (seconds) is the deadline of each call of this pipeline: the client's unless given here
        # or per call. (transformers' image pipelines take `timeout` for fetching URLs: the client fetches
        # them, within this deadline.)
        self.timeout: float | None = defaults.pop("timeout", client.timeout)
        self.defaults = defaults
        self.max_in_flight = max_in_flight
        self.check_arguments(defaults)  # fail at construction on unknown defaults, as transformers does

    # ---- the steps
    def check_arguments(self, kwargs: dict[str, Any]) -> None:
        unknown = set(kwargs) - self.accepted
        if unknown:
            raise TypeError(f"unsupported {self.task} argument(s): {', '.join(sorted(unknown))}")

    def without_loader_arguments(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in kwargs.items() if k not in LOADER_ARGUMENTS or k in self.accepted}

    def parse_call(self, inputs: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """A call's input(s) and call arguments (defaults merged, checked) as the pipeline reads them;
        tasks whose call takes more positional arguments say how."""
        merged = {**self.defaults, **kwargs}
        self.check_arguments(merged)
        return inputs, merged

    def is_single(self, inputs: Any) -> bool:
        raise NotImplementedError

    def request_unit(self, one: Any) -> Any:
        """What the request for one input carries."""
        return one

    def request_units(self, items: list[Any]) -> list[Any]:
        """What the requests for a list carry."""
        return items

    def method(self) -> Any:
        """The unary stub method of `self.client`: the sync client's (callable, with `.future`) or the
        asyncio client's (awaited by the asyncio twin)."""
        raise NotImplementedError

    def build_request(self, unit: Any, kwargs: dict[str, Any]) -> Any:
        raise NotImplementedError

    def read_results(self, response: Any, unit: Any, kwargs: dict[str, Any]) -> list[Any]:
        """One result per input of the unit."""
        raise NotImplementedError

    def present(self, result: Any, inputs: Any, kwargs: dict[str, Any]) -> Any:
        return result

    # ---- call options shared by every call shape
    def call_timeout(self, kwargs: dict[str, Any]) -> float | None:
        """This call's deadline: its `timeout=` (taken out of kwargs), else the pipeline's."""
        return kwargs.pop("timeout", self.timeout)

    def waiting(self) -> Any:
        """How a call waits while the server starts or the model loads (the client's wait_for_ready)."""
        return self.client.waiting(self.model, self.task)

    # ---- the synchronous call
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        timeout = self.call_timeout(kwargs)
        inputs, merged = self.parse_call(*args, **self.without_loader_arguments(kwargs))
        if self.is_single(inputs):
            return self.present(self.send(self.request_unit(inputs), merged, timeout)[0], inputs, merged)
        if isinstance(inputs, list | tuple):
            return list(self.pipelined(self.request_units(list(inputs)), merged, timeout))
        if isinstance(inputs, Iterable):
            return self.pipelined((self.request_unit(item) for item in inputs), merged, timeout)
        if is_dataset(inputs):
            return self.pipelined((self.request_unit(item) for item in iter_dataset(inputs)), merged, timeout)
        raise TypeError(f"unsupported {self.task} input of type {type(inputs).__name__}")

    def send(self, unit: Any, kwargs: dict[str, Any], timeout: float | None) -> list[Any]:
        request = self.build_request(unit, kwargs)
        response = _transport.call(self.method(), request, timeout, self.waiting())
        return self.read_results(response, unit, kwargs)

    def pipelined(self, units: Iterable[Any], kwargs: dict[str, Any], timeout: float | None) -> Iterator[Any]:
        pending: deque[tuple[Any, Any, Any]] = deque()

        def finish(unit: Any, request: Any, future: Any) -> list[Any]:
            try:
                response = _transport.result(future)
            except Unavailable:
                # Sent while the server started or the model loaded: sent again, waiting as a single call.
                response = _transport.call(self.method(), request, timeout, self.waiting())
            return self.read_results(response, unit, kwargs)

        try:
            for unit in units:
                request = self.build_request(unit, kwargs)
                pending.append((unit, request, _transport.submit(self.method(), request, timeout)))
                if len(pending) >= self.max_in_flight:
                    yield from finish(*pending.popleft())
            while pending:
                yield from finish(*pending.popleft())
        finally:
            for _, _, future in pending:
                future.cancel()
