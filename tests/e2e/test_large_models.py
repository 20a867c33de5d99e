"""Large-model placement on a CPU machine, through a real server: device auto with a memory budget small
enough to force accelerate to offload most weights to disk, copies of the weights on a list of devices,
and what each model costs (weights per device, RSS after loading) in ListModels and the metrics; a config
whose models cannot fit the budgets it declares is refused at start-up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from asr_specs import ASR, WHISPER_KWARGS
from harness import ServerThread
from pipelined import Client
from pipelined_server.app import App
from pipelined_server.cli import main
from pipelined_server.config import ModelSpec, ServerConfig
from pipelined_server.errors import ConfigError
from pipelined_server.loading import load_pipeline
from tiny_models import tiny_audio

# The tiny Whisper holds ~2.3 MB of float32 weights: a 0.8 MB CPU budget leaves most of it on disk.
CPU_BUDGET = 800_000


def full_bytes(directory: Path) -> int:
    import transformers

    model = transformers.AutoModelForSpeechSeq2Seq.from_pretrained(directory)
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


@pytest.fixture(scope="module")
def offload_spec(tiny_whisper_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    return ModelSpec(
        name="offloaded",
        task=ASR,
        source=str(tiny_whisper_dir),
        device="auto",
        max_memory={"cpu": CPU_BUDGET},
        offload_folder=str(tmp_path_factory.mktemp("offload")),
        pipeline_kwargs=WHISPER_KWARGS,
    )


@pytest.fixture(scope="module")
def copies_spec(tiny_whisper_dir: Path) -> ModelSpec:
    return ModelSpec(
        name="two-copies",
        task=ASR,
        source=str(tiny_whisper_dir),
        devices=("cpu", "cpu"),
        pipeline_kwargs=WHISPER_KWARGS,
    )


@pytest.fixture(scope="module")
def server(offload_spec: ModelSpec, copies_spec: ModelSpec) -> Iterator[ServerThread]:
    config = ServerConfig(host="127.0.0.1", port=0, metrics_port=0, models=(offload_spec, copies_spec))
    server = ServerThread(config)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def infos(server: ServerThread) -> dict[str, dict]:
    return {m["name"]: m for m in Client(server.target).models()}


def test_offloaded_model_serves_what_the_same_in_process_load_computes(
    server: ServerThread, offload_spec: ModelSpec
) -> None:
    local = load_pipeline(offload_spec)
    assert "disk" in dict(local.placements).values()  # the budget really forced an offload
    remote = Client(server.target, timeout=300).pipeline(ASR, model="offloaded")
    for seed in (1, 2):
        audio = tiny_audio(4.0, seed=seed)
        for kwargs in ({}, {"return_timestamps": True}):
            assert remote(audio, **kwargs) == local.pipeline(audio.copy(), **kwargs)


def test_list_models_shows_where_each_part_lives(infos: dict[str, dict], tiny_whisper_dir: Path) -> None:
    info = infos["offloaded"]
    assert info["state"] == "ready" and info["device"] == "auto (cpu, disk)"
    places = info["device_map"]
    assert set(places.values()) == {"cpu", "disk"} and places["model.decoder"] == "disk"
    weights = info["weight_bytes"]
    assert set(weights) == {"cpu", "disk"}
    assert 0 < weights["cpu"] <= CPU_BUDGET < weights["disk"]
    assert weights["cpu"] + weights["disk"] == full_bytes(tiny_whisper_dir)


def test_each_device_holds_a_copy_of_the_weights(
    server: ServerThread, infos: dict[str, dict], tiny_whisper_dir: Path
) -> None:
    info = infos["two-copies"]
    assert info["replica_devices"] == ["cpu", "cpu"] and info["device"] == "cpu" and info["device_map"] == {}
    assert info["weight_bytes"] == {"cpu": 2 * full_bytes(tiny_whisper_dir)}
    pipes = server.app.state.registry.instances["two-copies"].scheduler._replicas
    assert len(pipes) == 2 and pipes[0].model is not pipes[1].model
    remote = Client(server.target, timeout=300).pipeline(ASR, model="two-copies")
    audio = tiny_audio(3.0, seed=4)
    assert remote([audio, audio]) == [pipes[1](audio.copy())] * 2


def test_memory_is_reported_in_list_models_and_metrics(server: ServerThread, infos: dict[str, dict]) -> None:
    for name, info in infos.items():
        for device, size in info["weight_bytes"].items():
            assert server.metric("pipelined_model_weight_bytes", model=name, device=device) == size
        rss = info["resident_bytes_after_load"]
        assert rss > sum(info["weight_bytes"].values())
        assert server.metric("pipelined_model_resident_bytes_after_load", model=name) == rss


async def test_a_model_that_cannot_fit_its_budget_is_refused_at_start(offload_spec: ModelSpec) -> None:

    for spec in (
        offload_spec.model_copy(update={"offload_folder": ""}),  # auto without anywhere to put the rest
        offload_spec.model_copy(
            update={"device": "cpu", "offload_folder": ""}
        ),  # a fixed device smaller than the weights
    ):
        app = App.build(ServerConfig(host="127.0.0.1", port=0, metrics_port=0, models=(spec,)))
        needle = r"models\[0\]\.max_memory: model 'offloaded' needs at least 2\.2 MiB of weights \(auto\)"
        with pytest.raises(ConfigError, match=needle):
            await app.start()
        assert app.port == 0  # refused before binding or loading anything


async def test_copies_on_one_device_share_its_budget(copies_spec: ModelSpec) -> None:

    spec = copies_spec.model_copy(
        update={"max_memory": {"cpu": 3_000_000}}
    )  # one copy (2.2 MiB) fits, two do not
    app = App.build(ServerConfig(host="127.0.0.1", port=0, metrics_port=0, models=(spec,)))
    with pytest.raises(ConfigError, match=r"needs at least 4\.4 MiB .* \(cpu 2\.9 MiB for 2 copies\)"):
        await app.start()


def test_the_server_command_exits_2_naming_the_key(
    tiny_whisper_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(
        "models:\n  - name: ok\n    task: automatic-speech-recognition\n"
        f"    source: {tiny_whisper_dir}\n"
        "  - name: big\n    task: automatic-speech-recognition\n"
        f"    source: {tiny_whisper_dir}\n    device: auto\n    max_memory: {{cpu: 1MB}}\n"
    )
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(config), "--port", "0", "--metrics-port", "0"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "configuration error: models[1].max_memory: model 'big' needs at least 2.2 MiB" in err
    assert "set offload_folder" in err
