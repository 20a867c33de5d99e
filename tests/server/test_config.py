"""Config files are validated at start-up, and errors name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipelined_server.cli import build_config, parse_args
from pipelined_server.config import default_config, load_config, parse_config
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
            "limits: max_num_beams must be >= 1",
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
