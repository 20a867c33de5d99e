"""The transformers pipelines tutorial (https://huggingface.co/docs/transformers/pipeline_tutorial),
rewritten for the SDK: `transformers.pipeline(...)` becomes `Client(target).pipeline(...)`, tiny served
models stand in for Hub names, and each example is compared with the local pipeline on the same model."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest
from harness import ServerThread
from pipelined import Client
from pipelined.aio import Client as AsyncClient
from text_fixtures import assert_close, local_pipeline, text_server

TEXTS = ["john lives in paris", "the weather is good today", "hello world", "mary visited berlin"]


@pytest.fixture(scope="module")
def server() -> ServerThread:
    return text_server()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Client:
    return Client(server.target, timeout=120)


# ---- pipeline(model=...) without a task: the served model's task, as transformers infers it


def test_model_without_task(client: Client) -> None:
    pipe = client.pipeline(model="tiny-sentiment")
    assert pipe.task == "text-classification"
    assert_close(pipe(TEXTS[0]), local_pipeline("tiny-sentiment")(TEXTS[0]))
    assert_close(pipe(TEXTS), local_pipeline("tiny-sentiment")(TEXTS))


def test_model_without_task_asyncio(server: ServerThread) -> None:
    async def run() -> Any:
        async with AsyncClient(server.target, timeout=120) as aclient:
            return await aclient.pipeline(model="tiny-sentiment")(TEXTS[1])

    assert_close(asyncio.run(run()), local_pipeline("tiny-sentiment")(TEXTS[1]))


def test_task_without_model_and_neither(client: Client) -> None:
    assert client.pipeline("text-classification").task == "text-classification"
    with pytest.raises(TypeError, match="task, a model"):
        client.pipeline()


# ---- placement arguments: checked against ListModels, warn on a mismatch, raise when strict


@pytest.mark.parametrize(
    "placement",
    [
        {"device": 0},
        {"device": "cuda"},
        {"device_map": "auto"},
        {"torch_dtype": "float16"},
        {"dtype": "bfloat16"},
    ],
    ids=repr,
)
def test_placement_mismatch_warns(client: Client, server: ServerThread, placement: dict[str, Any]) -> None:
    served = client.model("tiny-sentiment")
    assert served["device"] == "cpu"  # the test server runs on CPU
    with pytest.warns(UserWarning, match="served on device 'cpu'") as caught:
        pipe = client.pipeline("sentiment-analysis", model="tiny-sentiment", **placement)
    assert len(caught) == 1 and next(iter(placement)) in str(caught[0].message)
    assert_close(pipe(TEXTS[0]), local_pipeline("tiny-sentiment")(TEXTS[0]))
    with pytest.raises(ValueError, match="served on device"):
        Client(server.target, strict=True).pipeline(model="tiny-sentiment", **placement)


def test_matching_placement_is_silent(client: Client) -> None:
    served = client.model("tiny-sentiment")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client.pipeline(
            model="tiny-sentiment", device=-1, torch_dtype=served["dtype"], trust_remote_code=False
        )
        client.pipeline(model="tiny-sentiment", device="cpu", dtype="auto", revision=None)


def test_loading_arguments_warn(client: Client) -> None:
    with pytest.warns(UserWarning, match="revision='main'"):
        client.pipeline(model="tiny-sentiment", revision="main")
    with pytest.warns(UserWarning, match="low_cpu_mem_usage"):
        client.pipeline(model="tiny-sentiment", model_kwargs={"low_cpu_mem_usage": True})


def test_unknown_arguments_still_fail(client: Client) -> None:
    with pytest.raises(TypeError, match="unsupported"):
        client.pipeline(model="tiny-sentiment", not_an_argument=1)
    with pytest.raises(TypeError, match="unsupported"):
        client.pipeline(model="tiny-sentiment")(TEXTS[0], not_an_argument=1)


# ---- datasets as inputs: streamed, bounded in flight, results in order


class TorchStyleDataset:
    """What `torch.utils.data.Dataset` subclasses look like: `__len__` and `__getitem__`, no `__iter__`."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


class CountingDataset(TorchStyleDataset):
    """Counts the items read, to show that items are read as their requests leave, not ahead of them."""

    reads = 0

    def __getitem__(self, i: int) -> Any:
        self.reads += 1
        return super().__getitem__(i)


def test_dataset_read_as_requests_leave(client: Client) -> None:
    dataset = CountingDataset(TEXTS * 3)
    results = client.pipeline(model="tiny-sentiment", max_in_flight=2)(dataset, batch_size=8, num_workers=2)
    first = next(results)
    assert dataset.reads == 2  # max_in_flight requests left before the first result: no more were read
    assert_close([first, *results], local_pipeline("tiny-sentiment")(TEXTS * 3))


def test_key_dataset(client: Client) -> None:
    from transformers.pipelines.pt_utils import KeyDataset

    dataset = [{"text": t, "label": i} for i, t in enumerate(TEXTS)]
    pipe = client.pipeline(model="tiny-sentiment")
    remote = pipe(KeyDataset(dataset, "text"), batch_size=2)
    assert not isinstance(remote, list)  # a generator, as transformers returns for a dataset
    assert_close(list(remote), list(local_pipeline("tiny-sentiment")(KeyDataset(dataset, "text"))))


def test_key_pair_dataset(client: Client) -> None:
    from transformers.pipelines.pt_utils import KeyPairDataset

    dataset = [{"premise": a, "hypothesis": b} for a, b in zip(TEXTS, reversed(TEXTS), strict=True)]
    remote = list(client.pipeline(model="tiny-sentiment")(KeyPairDataset(dataset, "premise", "hypothesis")))
    local = list(local_pipeline("tiny-sentiment")(KeyPairDataset(dataset, "premise", "hypothesis")))
    assert_close(remote, local)


def test_torch_style_dataset(client: Client) -> None:
    remote = list(client.pipeline(model="tiny-sentiment")(TorchStyleDataset(TEXTS * 3)))
    assert_close(remote, local_pipeline("tiny-sentiment")(TEXTS * 3))


def test_datasets_column(client: Client) -> None:
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_dict({"text": TEXTS})
    remote = list(client.pipeline(model="tiny-sentiment")(dataset["text"]))
    assert_close(remote, local_pipeline("tiny-sentiment")(list(dataset["text"])))


def test_generator_batch_size_2(client: Client) -> None:
    def data() -> Any:
        for i in range(6):
            yield f"{TEXTS[i % 4]} {i}"

    pipe = client.pipeline(model="tiny-sentiment")
    remote = [out for out in pipe(data(), batch_size=2)]
    local = [out for out in local_pipeline("tiny-sentiment")(data(), batch_size=2)]
    assert_close(remote, local)


# ---- the same datasets through the asyncio client: `await pipe(dataset)` -> a list, `pipe.iterate(dataset)`


def _datasets() -> dict[str, tuple[Any, list[Any]]]:
    """name -> (remote input, the local pipeline's input for the same items)."""
    from transformers.pipelines.pt_utils import KeyDataset, KeyPairDataset

    rows = [{"text": a, "pair": b} for a, b in zip(TEXTS, reversed(TEXTS), strict=True)]
    cases: dict[str, tuple[Any, list[Any]]] = {
        "KeyDataset": (KeyDataset(rows, "text"), list(KeyDataset(rows, "text"))),
        "KeyPairDataset": (KeyPairDataset(rows, "text", "pair"), list(KeyPairDataset(rows, "text", "pair"))),
        "torch-style": (TorchStyleDataset(TEXTS * 2), TEXTS * 2),
    }
    try:
        import datasets
    except ImportError:
        return cases
    column = datasets.Dataset.from_dict({"text": TEXTS})["text"]
    cases["datasets column"] = (column, list(column))
    return cases


@pytest.mark.parametrize("name", ["KeyDataset", "KeyPairDataset", "torch-style", "datasets column"])
async def test_datasets_asyncio(server: ServerThread, name: str) -> None:
    cases = _datasets()
    if name not in cases:
        pytest.skip("the datasets package is not installed (pip install datasets)")
    remote_input, local_input = cases[name]
    local = local_pipeline("tiny-sentiment")(local_input)
    async with AsyncClient(server.target, timeout=120) as aclient:
        pipe = aclient.pipeline(model="tiny-sentiment", max_in_flight=2)
        assert_close(await pipe(remote_input, batch_size=2, num_workers=2), local)
        assert_close([r async for r in pipe.iterate(remote_input, batch_size=2)], local)


async def test_dataset_read_as_requests_leave_asyncio(server: ServerThread) -> None:
    dataset = CountingDataset(TEXTS * 3)
    async with AsyncClient(server.target, timeout=120) as aclient:
        results = aclient.pipeline(model="tiny-sentiment", max_in_flight=2).iterate(dataset, num_workers=4)
        first = await anext(results)
        assert dataset.reads == 2  # max_in_flight requests left before the first result: no more were read
        rest = [r async for r in results]
    assert_close([first, *rest], local_pipeline("tiny-sentiment")(TEXTS * 3))


async def test_generator_batch_size_2_asyncio(server: ServerThread) -> None:
    def data() -> Any:
        for i in range(6):
            yield f"{TEXTS[i % 4]} {i}"

    async with AsyncClient(server.target, timeout=120) as aclient:
        remote = await aclient.pipeline(model="tiny-sentiment")(data(), batch_size=2)
    assert_close(remote, list(local_pipeline("tiny-sentiment")(data(), batch_size=2)))


async def test_unsupported_input_asyncio(server: ServerThread) -> None:
    async with AsyncClient(server.target, timeout=120) as aclient:
        pipe = aclient.pipeline(model="tiny-sentiment")
        with pytest.raises(TypeError, match="unsupported text-classification input of type int"):
            await pipe(42)
        with pytest.raises(TypeError, match="unsupported"):
            await pipe(TEXTS, batch_size=2, not_an_argument=1)


# ---- generation: sampling arguments as in the local pipeline; `seed` makes sampling reproducible


def test_generation_sampling(client: Client) -> None:
    pipe = client.pipeline(model="tiny-lm")
    assert pipe.task == "text-generation"
    kwargs = {"do_sample": True, "top_p": 0.95, "max_new_tokens": 5}
    first = pipe("hello world", seed=7, **kwargs)
    assert first == pipe("hello world", seed=7, **kwargs)
    local = local_pipeline("tiny-lm")("hello world", **kwargs)
    assert [set(r) for r in first] == [set(r) for r in local]
    assert first[0]["generated_text"].startswith("hello world")
    greedy = {"do_sample": False, "max_new_tokens": 5}
    assert_close(pipe("hello world", **greedy), local_pipeline("tiny-lm")("hello world", **greedy))


def test_placement_asyncio(server: ServerThread) -> None:
    async def run() -> None:
        async with AsyncClient(server.target) as aclient:
            with pytest.warns(UserWarning, match="served on device 'cpu'"):
                aclient.pipeline(model="tiny-sentiment", device_map="auto")
        async with AsyncClient(server.target, strict=True) as strict:
            with pytest.raises(ValueError, match="served on device"):
                strict.pipeline(model="tiny-sentiment", device=0)

    asyncio.run(run())
