"""The command line against a real server (a subprocess, as a user runs it): headers, --json for every
subcommand, health that explains itself, long files streamed by default, progress only on a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from harness import ServerThread
from tiny_models import tiny_audio


def cli(server: ServerThread, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelined.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PIPELINED_TARGET": server.target},
    )


def _wav(path: Path, seconds: float, seed: int) -> str:
    samples = (np.clip(tiny_audio(seconds, seed=seed), -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.tobytes())
    return str(path)


def test_models_has_a_header_and_explains_the_star(asr_server: ServerThread) -> None:
    done = cli(asr_server, "models")
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and lines[0].split()[:3] == ["NAME", "TASK", "STATE"]
    assert any(line.startswith("* tiny-whisper") for line in lines)
    assert lines[-1].startswith("* ") and "default" in lines[-1]
    served = json.loads(cli(asr_server, "models", "--json").stdout)
    assert {m["name"] for m in served} == {"tiny-whisper", "tiny-ctc"}
    assert next(m for m in served if m["name"] == "tiny-whisper")["default"] is True


def test_health_prints_status_cleanly(asr_server: ServerThread) -> None:
    done = cli(asr_server, "health")
    assert done.returncode == 0 and done.stdout == f"server {asr_server.target}: SERVING\n"
    model = cli(asr_server, "health", "tiny-ctc", "--json")
    assert json.loads(model.stdout) == {"service": "tiny-ctc", "status": "SERVING"}
    missing = cli(asr_server, "health", "nope")
    assert missing.returncode == 3 and missing.stderr.startswith("pipelined: NOT_FOUND: ")
    assert "no model named 'nope'" in missing.stderr


def test_long_file_streams_by_default_and_json_lines(asr_server: ServerThread, tmp_path: Path) -> None:
    long = _wav(tmp_path / "long.wav", 40.0, seed=3)
    done = cli(asr_server, "transcribe", long)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("[") and "long.wav:" not in done.stdout  # segments, not one line
    assert done.stderr == ""  # no progress bar when stderr is not a terminal
    lines = [json.loads(line) for line in cli(asr_server, "transcribe", long, "--json").stdout.splitlines()]
    assert lines and all(line["file"] == long for line in lines)
    assert lines[-1]["audio_duration_s"] == pytest.approx(40.0)
    whole = cli(asr_server, "transcribe", long, "--no-stream", "--json")
    assert json.loads(whole.stdout)["text"] == "".join(line["text"] for line in lines)


def test_short_file_is_one_call(asr_server: ServerThread, tmp_path: Path) -> None:
    short = _wav(tmp_path / "short.wav", 3.0, seed=4)
    done = cli(asr_server, "transcribe", short)
    assert done.returncode == 0 and done.stdout.startswith(f"{short}:")
    assert "text" in json.loads(cli(asr_server, "--json", "transcribe", short).stdout)


def test_run_json_and_stream_refused_for_tasks_without_it(asr_server: ServerThread, tmp_path: Path) -> None:
    short = _wav(tmp_path / "s.wav", 2.0, seed=5)
    done = cli(asr_server, "run", "automatic-speech-recognition", short, "--json")
    assert done.returncode == 0 and "text" in json.loads(done.stdout)
    refused = cli(asr_server, "run", "automatic-speech-recognition", short, "--stream")
    assert refused.returncode == 2 and "--stream needs" in refused.stderr
