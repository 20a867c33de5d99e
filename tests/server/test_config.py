"""Config files are validated at start-up, and errors name the field."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from pipelined_server.cli import build_config, loop_factory, parse_args
from pipelined_server.config import check_devices, default_config, load_config, parse_config
from pipelined_server.errors import ConfigError
from pipelined_server.loading import pipeline_kwargs_for


def test_yaml_and_toml_configs(tmp_path: Path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text(
        "port: 6000\nmodels:\n"
        "  - name: a\n    source: embedded:whisper-tiny.en\n    batching: {max_batch_size: 4}\n"
        "  - name: b\n    task: automatic-speech-recognition\n    source: /tmp\n    device: auto\n    default: true\n"
    )
    config = load_config(yaml_file)
    assert config.port == 6000
    assert config.models[0].task == "automatic-speech-recognition"
    assert config.models[0].pipeline_kwargs == {"num_beams": 1}
    assert config.models[0].batching.max_batch_size == 4
    assert config.default_model("automatic-speech-recognition").name == "b"
    toml_file = tmp_path / "c.toml"
    toml_file.write_text('[[models]]\nname = "a"\nsource = "embedded:whisper-base"\ndtype = "float16"\n')
    assert load_config(toml_file).models[0].dtype == "float16"


@pytest.mark.parametrize(
    ("document", "needle"),
    [
        ({}, "models"),
        ({"models": [{"name": "a"}]}, "models[0].source"),
        ({"models": [{"name": "a", "source": "x"}]}, "models[0].task"),
        ({"models": [{"name": "a", "source": "x", "task": "dance"}]}, "dance"),
        ({"models": [{"name": "a", "source": "x", "task": "fill-mask", "colour": 1}]}, "colour"),
        (
            {
                "models": [
                    {"name": "a", "source": "x", "task": "fill-mask", "batching": {"max_batch_size": 0}}
                ]
            },
            "max_batch_size",
        ),
        ({"models": [{"name": "a", "source": "x", "task": "fill-mask", "dtype": "int3"}]}, "dtype"),
        ({"models": [{"name": "a", "source": "embedded:nope"}]}, "nope"),
        ({"models": [{"name": "a", "source": "embedded:whisper-base"}] * 2}, "duplicate"),
        ({"models": [{"name": "a", "source": "embedded:whisper-base"}], "audio": {"max_x": 1}}, "audio"),
        ({"models": [{"name": "a", "source": "embedded:whisper-base"}], "limits": {"max_x": 1}}, "limits"),
        (
            {"models": [{"name": "a", "source": "embedded:whisper-base"}], "limits": {"max_num_beams": 0}},
            "limits.max_num_beams: Input should be greater than or equal to 1",
        ),
    ],
)
def test_bad_configs_name_the_field(document: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        parse_config(document)
    assert needle in str(caught.value)


def test_defaults_serve_embedded_tiny_en_greedy() -> None:
    from pipelined_server.sources.embedded import is_available

    config = default_config()
    text = [f"embedded:{n}" for n in ("all-minilm-l6-v2", "smollm2-135m-instruct") if is_available(n)]
    assert [m.source for m in config.models] == ["embedded:whisper-tiny.en", *text]
    assert config.models[0].pipeline_kwargs["num_beams"] == 1
    by_task = {m.task: m for m in config.models}
    if "feature-extraction" in by_task:
        assert by_task["feature-extraction"].request_defaults == {"pooling": "mean", "normalize": True}
    if "text-generation" in by_task:
        assert by_task["text-generation"].pipeline_kwargs == {"do_sample": False}


@pytest.mark.parametrize(
    ("document", "needle"),
    [
        ({"inputs": {"max_text_chars": 0}}, "inputs.max_text_chars"),
        ({"inputs": {"max_batch_inputs": 0}}, "inputs.max_batch_inputs"),
        ({"inputs": {"max_chars": 1}}, "inputs"),
        ({"request_defaults": {"pooling": "max"}}, "request_defaults.pooling"),
        ({"request_defaults": {"normalize": True}}, "request_defaults.normalize"),
        ({"request_defaults": {"top_k": 3}}, "request_defaults.top_k"),
    ],
)
def test_bad_text_options_name_the_field(document: dict, needle: str) -> None:
    model = {"name": "e", "source": "x", "task": "feature-extraction"}
    if "request_defaults" in document:
        model["request_defaults"] = document.pop("request_defaults")
    with pytest.raises(ConfigError) as caught:
        parse_config({"models": [model], **document})
    assert needle in str(caught.value)


def test_flags_serve_one_model_without_a_file() -> None:
    config = build_config(parse_args(["--model", "whisper-base", "--port", "7000", "--device", "cuda:1"]))
    assert config.port == 7000 and config.models[0].device == "cuda:1" and config.models[0].default
    with pytest.raises(ConfigError, match="--task"):
        build_config(parse_args(["--model", "/some/dir"]))


def test_the_event_loop_is_uvloop_unless_asked_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_config(parse_args(["--model", "whisper-base"]), {}).event_loop == "auto"
    config = build_config(parse_args(["--model", "whisper-base", "--event-loop", "asyncio"]), {})
    assert config.event_loop == "asyncio" and loop_factory("asyncio") is None
    environ = {"PIPELINED_EVENT_LOOP": "uvloop"}
    assert build_config(parse_args(["--model", "whisper-base"]), environ).event_loop == "uvloop"
    with pytest.raises(ConfigError, match="event_loop"):
        parse_config({"models": [{"name": "a", "source": "x", "task": "fill-mask"}], "event_loop": "trio"})
    if sys.platform.startswith("linux"):
        with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
            assert type(runner.get_loop()).__module__.startswith("uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # not installed
    assert loop_factory("auto") is None
    with pytest.raises(ConfigError, match="event_loop: uvloop is not installed"):
        loop_factory("uvloop")


def test_device_and_dtype_become_pipeline_arguments() -> None:
    spec = parse_config(
        {"models": [{"name": "a", "source": "x", "task": "fill-mask", "device": "auto", "dtype": "bfloat16"}]}
    ).models[0]
    assert pipeline_kwargs_for(spec) == {"device_map": "auto", "dtype": "bfloat16"}
    spec = parse_config(
        {"models": [{"name": "a", "source": "x", "task": "fill-mask", "device": "cuda:1"}]}
    ).models[0]
    assert pipeline_kwargs_for(spec) == {"device": "cuda:1"}


def test_embedded_defaults_survive_an_explicit_task_and_merge_with_overrides() -> None:
    spec = parse_config(
        {
            "models": [
                {
                    "name": "a",
                    "source": "embedded:whisper-tiny.en",
                    "task": "automatic-speech-recognition",
                    "pipeline_kwargs": {"max_new_tokens": 100},
                }
            ]
        }
    ).models[0]
    assert spec.pipeline_kwargs == {"num_beams": 1, "max_new_tokens": 100}


MODEL = {"name": "a", "source": "x", "task": "fill-mask"}


def _error(document: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    return str(caught.value)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        # Issue 12: a value of the wrong type is refused with its key path, never a raw TypeError.
        ({"models": [{**MODEL, "replicas": "two"}]}, "models[0].replicas: Input should be a valid integer"),
        ({"models": [{**MODEL, "replicas": True}]}, "models[0].replicas: expected a number, not a boolean"),
        ({"models": [{**MODEL, "replicas": 1.5}]}, "models[0].replicas: Input should be a valid integer"),
        ({"models": [MODEL], "port": "fifty"}, "port: Input should be a valid integer"),
        ({"models": [MODEL], "port": 70000}, "port: Input should be less than or equal to 65535"),
        ({"models": [{**MODEL, "device": "gpu"}]}, "models[0].device: 'gpu' is not a device: use cpu, cuda"),
        ({"models": [{**MODEL, "device": "cuda:x"}]}, "models[0].device: 'cuda:x' is not a device"),
        ({"models": [{**MODEL, "name": 5}]}, "models[0].name: Input should be a valid string"),
        (
            {"models": [MODEL], "grace_period_s": -1},
            "grace_period_s: Input should be greater than or equal to 0",
        ),
        ({"models": [MODEL], "grace_period_s": "soon"}, "grace_period_s: Input should be a valid number"),
        (
            {"models": [MODEL], "torch_threads": 0},
            "torch_threads: Input should be greater than or equal to 1",
        ),
        (
            {"models": [MODEL], "streaming": {"max_window_s": 26}},
            "streaming.max_window_s: 26.0 must be below",
        ),
        (
            {"models": [MODEL], "streaming": {"hard_window_s": 31}},
            "streaming.hard_window_s: Input should be less",
        ),
        (
            {"models": [MODEL], "streaming": {"max_streams": 0}},
            "streaming.max_streams: Input should be greater",
        ),
        (
            {"models": [MODEL], "streaming": {"calibrate": "sometimes"}},
            "streaming.calibrate: Input should be a valid boolean",
        ),
        (
            {"models": [MODEL], "streaming": {"idle_timeout": 1}},
            "streaming.idle_timeout: unknown key; did you mean 'idle_timeout_s'?",
        ),
        (
            {"models": [MODEL], "audio": {"min_sample_rate_hertz": 9000, "max_sample_rate_hertz": 8000}},
            "audio.min_sample_rate_hertz: 9000 is above",
        ),
        (
            {"models": [MODEL], "images": {"allowed_url_hosts": "cdn.example"}},
            "images.allowed_url_hosts: Input should be a list",
        ),
        (
            {"models": [MODEL], "limits": {"max_inputs_per_request": 0}},
            "limits.max_inputs_per_request: Input should be greater",
        ),
        ({"models": [MODEL], "prot": 1}, "prot: unknown key; did you mean 'port'?"),
        ({"models": {"a": MODEL}}, "models: Input should be a list"),
        ({"models": []}, "models: at least one model is required"),
        (
            {"models": [{**MODEL, "batching": {"max_batch_sizes": 2}}]},
            "models[0].batching.max_batch_sizes: unknown key",
        ),
        (
            {"models": [MODEL, {**MODEL, "name": "b", "replicas": 0}]},
            "models[1].replicas: Input should be greater",
        ),
    ],
)
def test_every_error_names_its_key_path(document: dict, message: str) -> None:
    assert message in _error(document)


def test_several_problems_are_reported_together() -> None:
    message = _error({"models": [{"name": "a"}], "port": "fifty"})
    assert message.startswith("3 problems:")
    for path in ("port:", "models[0].task: required", "models[0].source: required"):
        assert path in message


def test_numbers_written_as_strings_are_numbers() -> None:
    """Issue 12's `replicas: "2"`: accepted as 2, as PIPELINED_ environment variables need."""
    config = parse_config({"models": [{**MODEL, "replicas": "2"}], "port": "6000", "grace_period_s": "2.5"})
    assert (config.models[0].replicas, config.port, config.grace_period_s) == (2, 6000, 2.5)


def test_renamed_limits_are_accepted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config({"models": [MODEL], "inputs": {"max_batch_inputs": 7, "max_text_chars": 9}})
    assert (config.limits.max_inputs_per_request, config.limits.max_text_chars) == (7, 9)
    assert "inputs.max_batch_inputs is deprecated: use limits.max_inputs_per_request" in caplog.text
    config = parse_config({"models": [MODEL], "images": {"max_inputs_per_request": 5, "max_pixels": 10}})
    assert (config.limits.max_inputs_per_request, config.images.max_pixels) == (5, 10)
    # The same value twice is one limit; two values for it cannot both hold.
    same = {"inputs": {"max_batch_inputs": 5}, "limits": {"max_inputs_per_request": 5}}
    assert parse_config({"models": [MODEL], **same}).limits.max_inputs_per_request == 5
    message = _error(
        {"models": [MODEL], "inputs": {"max_batch_inputs": 3}, "images": {"max_inputs_per_request": 4}}
    )
    assert "images.max_inputs_per_request: renamed to limits.max_inputs_per_request" in message
    assert "[from inputs.max_batch_inputs]" in _error({"models": [MODEL], "inputs": {"max_batch_inputs": 0}})


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("missing.yaml", None, "cannot read config"),
        ("bad.yaml", "models: [\n", "not valid YAML"),
        ("bad.toml", "[[models]\n", "not valid TOML"),
        ("list.yaml", "- a\n- b\n", "expected a mapping of config keys, got list"),
        ("empty.yaml", "", "expected a mapping of config keys, got NoneType"),
    ],
)
def test_unreadable_files_say_why(tmp_path: Path, name: str, text: str | None, message: str) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert str(path) in str(caught.value)  # the file is named: a config error names where it is


def test_environment_overrides_the_file_and_flags_override_both(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "port: 6000\nmodels:\n  - {name: a, source: x, task: fill-mask}\n  - {name: b, source: y, task: fill-mask}\n"
    )
    environ = {
        "PIPELINED_PORT": "6001",
        "PIPELINED_LIMITS__MAX_INPUTS_PER_REQUEST": "12",
        "PIPELINED_MODELS__1__REPLICAS": "3",
        "PIPELINED_MODELS__1__BATCHING__MAX_BATCH_SIZE": "4",
        "PIPELINED_IMAGES__ALLOWED_URL_HOSTS": '["CDN.example"]',
        "PIPELINED_CACHE_DIR": "/elsewhere",  # the model cache's variable, not a config key
    }
    config = build_config(parse_args(["--config", str(path)]), environ)
    assert config.port == 6001 and config.limits.max_inputs_per_request == 12
    assert (config.models[1].replicas, config.models[1].batching.max_batch_size) == (3, 4)
    assert config.models[0].replicas == 1 and config.images.allowed_url_hosts == ("cdn.example",)
    config = build_config(parse_args(["--config", str(path), "--port", "6002"]), environ)
    assert config.port == 6002
    # Without a file the environment applies to the defaults.
    assert build_config(parse_args([]), {"PIPELINED_GRACE_PERIOD_S": "3"}).grace_period_s == 3.0
    # `null` turns off what a file would turn off with null.
    streaming = build_config(parse_args([]), {"PIPELINED_STREAMING__INTERIM_ALIGNATT_S": "null"}).streaming
    assert streaming.interim_alignatt_s is None and streaming.encoder_margin_s == 8.0


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"PIPELINED_PORT": "fifty"},
            "port: Input should be a valid integer, unable to parse string as an integer (got 'fifty') [from PIPELINED_PORT]",
        ),
        (
            {"PIPELINED_LIMITS__MAX_INPUT": "3"},
            "limits.max_input: unknown key; did you mean 'max_inputs_per_request'?",
        ),
        ({"PIPELINED_MODELS__0__DEVICE": "gpu"}, "models[0].device: 'gpu' is not a device"),
        ({"PIPELINED_MODELS__5__REPLICAS": "2"}, "PIPELINED_MODELS__5__REPLICAS: models has 1 entries"),
        (
            {"PIPELINED_IMAGES__ALLOWED_URL_HOSTS": "[cdn"},
            "PIPELINED_IMAGES__ALLOWED_URL_HOSTS: not valid JSON",
        ),
    ],
)
def test_bad_environment_values_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(parse_args(["--model", "whisper-tiny.en"]), environ)
    assert message in str(caught.value)


def test_unknown_environment_variables_warn(caplog: pytest.LogCaptureFixture) -> None:
    build_config(
        parse_args(["--model", "whisper-tiny.en"]), {"PIPELINED_PROT": "1", "PIPELINED_TARGET": "h:1"}
    )
    assert "PIPELINED_PROT names no config key" in caplog.text and "PIPELINED_TARGET" not in caplog.text


def _devices_error(device: str) -> str:
    config = parse_config({"models": [{**MODEL, "device": device}]})
    with pytest.raises(ConfigError) as caught:
        check_devices(config)
    return str(caught.value)


def test_devices_missing_on_this_machine_are_refused_at_start() -> None:
    import torch

    check_devices(parse_config({"models": [MODEL, {**MODEL, "name": "b", "device": "auto"}]}))
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert _devices_error(f"cuda:{count}").startswith(f"models[0].device: 'cuda:{count}' but ")
    if not torch.cuda.is_available():
        assert "no CUDA device is available here" in _devices_error("cuda")
    else:
        assert f"this machine has {count} CUDA device(s)" in _devices_error(f"cuda:{count}")
    if not torch.backends.mps.is_available():
        assert "models[0].device: 'mps' but MPS" in _devices_error("mps")


def test_the_server_exits_with_the_config_error_before_loading_anything() -> None:
    import subprocess
    import sys

    argv = [sys.executable, "-m", "pipelined_server.cli", "--model", "whisper-tiny.en", "--device", "cuda:99"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "configuration error: models[0].device: 'cuda:99' but" in done.stderr


_MODEL_YAML = "models: [{name: a, source: x, task: fill-mask}]\n"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("grace.yaml", _MODEL_YAML + "grace_period_s: -1\n", "grace_period_s: Input should be greater than"),
        (
            "streaming.yaml",
            _MODEL_YAML + "streaming: {max_window_s: 26}\n",
            "streaming.max_window_s: 26.0 must be below",
        ),
        ("threads.yaml", _MODEL_YAML + "torch_threads: 0\n", "torch_threads: Input should be greater than"),
        ("missing.yaml", None, "cannot read config {path}: No such file or directory"),
        ("bad.yaml", "models: [\n", "{path}: not valid YAML: "),
    ],
)
def test_the_cli_exits_2_with_the_config_error_on_stderr(
    tmp_path: Path, name: str, text: str | None, message: str
) -> None:
    """`pipelined-server --config FILE` refuses each of these before importing torch or loading anything."""
    import subprocess
    import sys

    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    argv = [sys.executable, "-m", "pipelined_server.cli", "--config", str(path), "--port", "0"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert f"pipelined-server: configuration error: {message.format(path=path)}" in done.stderr
    assert "Traceback" not in done.stderr and "listening" not in done.stdout
