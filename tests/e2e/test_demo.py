"""`pipelined demo` in a real browser: a pipelined server, the demo started by its command line, and the
system's Chromium driven by Playwright (no browser download). The page's results are compared with what
the SDK gets from the same server. A screenshot of each tab is saved under ARTIFACTS (printed), for a
person to look at.

Needs the `demo` extra (Gradio) and Playwright (the dev extra), and Chromium: `make test` installs
Debian's `chromium` where apt is available; elsewhere these tests skip, saying so. The live test feeds
Chromium's fake microphone from jfk.flac (../shared/data) converted to a 16-bit WAV.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest.importorskip("gradio", reason="the demo extra is not installed: pip install 'pipelined[demo]'")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed: pip install playwright"
)

import tiny_text_models as tiny_text  # noqa: E402
import tiny_vision_models as tiny_vision  # noqa: E402
from harness import ServerThread  # noqa: E402
from paths import REPO, SHARED_DATA, shared_reference  # noqa: E402
from pipelined import Client  # noqa: E402
from pipelined_server.config import ModelSpec, ServerConfig, embedded_spec  # noqa: E402
from pipelined_server.sources.embedded import is_available  # noqa: E402
from wer import normalize, wer  # noqa: E402

ASR, CHAT_MODEL = "whisper-tiny.en", "smollm2-135m-instruct"
ASR_TASK = "automatic-speech-recognition"
JFK = SHARED_DATA / "audio" / "jfk.flac"
ARTIFACTS = Path(os.environ.get("PIPELINED_TEST_ARTIFACTS", REPO / "build" / "test-artifacts")) / "demo"
# Silence before the clip in the fake microphone's file: Chromium starts playing the file when capture
# opens, and Gradio's recorder needs a moment before its first chunk (measured: up to ~2 s here).
LEAD_SILENCE_S = 3.0
# Live transcription on a loaded 2-core machine: the server's streaming output for this clip, fed through
# the browser's capture path, measured 0.14-0.32 WER against the reference (offline unary: 0.0); the
# bound leaves room above the worst seen, and a live path that lost the speech (broken capture,
# resampling or streaming) is far above it.
LIVE_MAX_WER = 0.5
START_S = 180  # what a cold start of the demo or of a model may take on a loaded machine
WAIT_MS = 180_000
# Everything `pipelined demo` printed, for the message of a failed test (its handlers log their errors).
DEMO_LOG: list[str] = []


def _browser_path() -> str | None:
    for name in (os.environ.get("PIPELINED_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def chromium() -> str:
    path = _browser_path()
    if path is None:
        pytest.skip("no Chromium on this machine (make test installs Debian's `chromium` where apt works)")
    return path


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\ndemo screenshots: {ARTIFACTS}")
    return ARTIFACTS


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("demo-models")

    def tiny(name: str, task: str, build: Any, *args: Any) -> ModelSpec:
        return ModelSpec(name=name, task=task, source=str(build(root / name, *args)))

    specs = [
        tiny("tiny-yolos", "object-detection", tiny_vision.build_tiny_object_detector),
        tiny("tiny-segformer", "image-segmentation", tiny_vision.build_tiny_semantic_segmenter),
        tiny("tiny-dpt", "depth-estimation", tiny_vision.build_tiny_depth_estimator),
        tiny("tiny-llava", "image-text-to-text", tiny_vision.build_tiny_llava),
        tiny("tiny-sentiment", "text-classification", tiny_text.build_tiny_bert, "sequence"),
        tiny("tiny-ner", "token-classification", tiny_text.build_tiny_bert, "token"),
    ]
    if is_available(ASR):
        specs.insert(0, embedded_spec(ASR))
    specs.append(
        embedded_spec(CHAT_MODEL)
        if is_available(CHAT_MODEL)
        else tiny("tiny-chat", "text-generation", tiny_text.build_tiny_causal_lm)
    )
    thread = ServerThread(ServerConfig(host="127.0.0.1", port=0, metrics_port=0, models=tuple(specs)))
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Client:
    return Client(server.target, timeout=300)


@pytest.fixture(scope="module")
def demo_url(server: ServerThread) -> Iterator[str]:
    """`pipelined demo` as a user starts it; its URL once it says it is serving."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "client"), str(REPO / "server"), *filter(None, [env.get("PYTHONPATH")])]
    )
    command = [
        sys.executable,
        "-m",
        "pipelined.cli",
        "demo",
        "--target",
        server.target,
        "--port",
        str(_free_port()),
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    url = None
    while url is None:
        line = lines.get(timeout=START_S)
        if line is None:
            pytest.fail(f"pipelined demo exited ({process.wait()}):\n{''.join(seen)}")
        seen.append(line)
        if line.startswith("pipelined demo: http"):
            url = line.split()[2]
    DEMO_LOG[:] = seen

    def keep() -> None:
        while (line := lines.get()) is not None:
            DEMO_LOG.append(line)

    threading.Thread(target=keep, daemon=True).start()
    yield url
    process.send_signal(signal.SIGINT)  # Ctrl-C: Gradio closes its server
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """jfk.flac as the 16-bit WAV Chromium's fake microphone reads, after LEAD_SILENCE_S of silence."""
    if not JFK.exists():
        return None
    import soundfile

    samples, rate = soundfile.read(str(JFK), dtype="float32", always_2d=True)
    silence = np.zeros((int(LEAD_SILENCE_S * rate), samples.shape[1]), dtype=np.float32)
    path = tmp_path_factory.mktemp("microphone") / "jfk16.wav"
    soundfile.write(str(path), np.concatenate([silence, samples]), rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def browser(chromium: str, microphone_wav: Path | None) -> Iterator[Any]:
    args = ["--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    if microphone_wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={microphone_wav}%noloop")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True, args=args)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, demo_url: str) -> Iterator[Any]:
    context = browser.new_context(permissions=["microphone"], viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    opened.goto(demo_url)
    opened.wait_for_selector("#families")
    yield opened
    context.close()


def _tab(page: Any, family: str, sub: str | None = None) -> None:
    page.click(f"#tab-{family}-button")
    if sub is not None:
        page.locator(f"#tab-{family}").get_by_role("tab", name=sub, exact=True).click()


def _need_asr(client: Client) -> None:
    if ASR not in {m["name"] for m in client.models()}:
        pytest.skip(f"the embedded {ASR} weights are not installed")
    if not JFK.exists():
        pytest.skip(f"{JFK} is absent: the shared data folder is not next to this checkout")


def _image_file(tmp_path: Path) -> Path:
    """The COCO cats when the shared data is there (a nicer screenshot), else a generated picture."""
    cats = SHARED_DATA / "images" / "coco_cats.png"
    if cats.exists():
        return cats
    path = tmp_path / "picture.png"
    tiny_vision.tiny_image(seed=1, size=(320, 240)).save(path)
    return path


def test_page_lists_the_served_models(page: Any, client: Client, artifacts: Path) -> None:
    served = client.models()
    title = page.inner_text("#models")
    for model in served:
        assert model["name"] in title
    page.click("#models button")  # unfold the table
    table = page.inner_text("#models-table")
    for model in served:
        assert model["name"] in table and model["task"] in table
    tabs = {"chat", "vision", "multimodal", "text"} | ({"live", "file"} if client.models(ASR_TASK) else set())
    for family in tabs:
        assert page.locator(f"#tab-{family}-button").is_visible()
    page.screenshot(path=artifacts / "models.png", full_page=True)


def test_uploaded_file_shows_the_transcript_and_word_timestamps(
    page: Any, client: Client, artifacts: Path
) -> None:
    _need_asr(client)
    _tab(page, "file")
    page.locator("#file-audio input[type=file]").set_input_files(str(JFK))
    page.locator("#file-level").get_by_label("words").check()
    page.click("#file-run")
    page.wait_for_selector("#file-progress[data-finished=true]")
    shown = page.locator("#file-text textarea").input_value()
    segments = list(client.pipeline(ASR_TASK, model=ASR).stream_file(str(JFK), return_timestamps="word"))
    expected = "".join(s["text"] for s in segments).strip()
    assert shown == expected
    assert wer(shared_reference("audio/jfk.flac"), shown) < 0.1
    words = [w for s in segments for w in s["words"]]
    assert page.get_attribute("#file-timeline-body", "data-pieces") == str(len(words))
    table = page.inner_text("#file-table")
    for word in words:
        start, end = word["timestamp"]
        assert f"{start:.2f}" in table and f"{end:.2f}" in table and word["text"].strip() in table
    page.screenshot(path=artifacts / "file.png", full_page=True)


# Records every distinct interim and final text the page shows while it streams.
WATCH_LIVE = """() => {
  window.interims = []; window.finals = [];
  new MutationObserver(() => {
    const interim = document.querySelector('#live-interim'), final = document.querySelector('#live-final');
    if (interim && interim.textContent.trim() && window.interims.at(-1) !== interim.textContent)
      window.interims.push(interim.textContent);
    if (final && final.textContent.trim() && window.finals.at(-1) !== final.textContent)
      window.finals.push(final.textContent);
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def test_live_microphone_shows_interim_and_final_text(
    page: Any, client: Client, microphone_wav: Path | None, artifacts: Path
) -> None:
    _need_asr(client)
    assert microphone_wav is not None
    reference = shared_reference("audio/jfk.flac")
    page.evaluate(WATCH_LIVE)
    mic = page.locator("#live-mic")
    _record(page, mic, artifacts)
    # The whole file has been captured (and a second of silence after it) ...
    played = LEAD_SILENCE_S + 11.0 + 1.0
    received = page.wait_for_function(
        f"""() => {{
          const s = document.querySelector('#live-stats');
          if (document.querySelector('.toast-body')) return 'error';
          return s && +s.dataset.received > {played} && 'received';
        }}"""
    ).json_value()
    if received != "received":
        _live_failed(page, artifacts, "the recording stopped with an error")
    page.screenshot(path=artifacts / "live-recording.png", full_page=True)
    mic.get_by_role("button", name="Stop").click()
    # ... and once stopped, the server's last finals are in.
    page.wait_for_selector("#live-stats[data-status=finished]")
    page.screenshot(path=artifacts / "live.png", full_page=True)
    interims, finals = page.evaluate("window.interims"), page.evaluate("window.finals")
    final = page.inner_text("#live-final")
    assert interims, "no interim text was shown"
    assert final == finals[-1]
    assert wer(reference, final) <= LIVE_MAX_WER, final
    # Interims are early hypotheses of the same speech: mostly the clip's words.
    vocabulary = set(normalize(reference).split())
    interim_words = [w for text in interims for w in normalize(text).split()]
    assert sum(w in vocabulary for w in interim_words) >= len(interim_words) / 2, interims
    # Finals only grow: each shown final text extends the previous one.
    assert all(later.startswith(earlier) for earlier, later in zip(finals, finals[1:], strict=False)), finals
    assert "speech started" in page.inner_text("#live-events")
    stats = page.locator("#live-stats")
    assert int(stats.get_attribute("data-finals") or 0) >= 1
    assert "lag last" in stats.inner_text()


def _live_failed(page: Any, artifacts: Path, why: str) -> None:
    """Fails the live test with what the page and the demo's log said (a screenshot beside the others)."""
    page.screenshot(path=artifacts / "live-failed.png", full_page=True)
    toasts = page.locator(".toast-body").all_inner_texts()
    stats = page.locator("#live-stats").all_inner_texts()
    pytest.fail(f"{why}; messages: {toasts}; stats: {stats}; demo log:\n{''.join(DEMO_LOG[-40:])}")


def _record(page: Any, mic: Any, artifacts: Path) -> None:
    """Clicks Record until the recorder runs. A click that lands before Gradio's recorder is ready is
    lost without a trace (seen once in CI on a loaded machine: no chunk came in 180 s); the Stop button
    shows that capture started."""
    stop = mic.get_by_role("button", name="Stop")
    for _ in range(3):
        # A timeout here means Record is gone: the previous click started the recorder late.
        with contextlib.suppress(sync_api.TimeoutError):
            mic.get_by_role("button", name="Record").click(timeout=15_000)
        try:
            stop.wait_for(timeout=15_000)
            return
        except sync_api.TimeoutError:
            continue
    _live_failed(page, artifacts, "the microphone did not start recording after 3 clicks on Record")


# Records every distinct text of the last bot message while it streams.
WATCH_CHAT = """() => {
  window.replies = [];
  new MutationObserver(() => {
    const bots = document.querySelectorAll('#chat-box .bot.message');
    const text = bots.length ? bots[bots.length - 1].innerText.trim() : '';
    if (text && window.replies.at(-1) !== text) window.replies.push(text);
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def test_chat_streams_tokens(page: Any, client: Client, artifacts: Path) -> None:
    question = "What is the capital of France?"
    _tab(page, "chat")
    page.evaluate(WATCH_CHAT)
    page.fill("#chat-input textarea", question)
    page.click("#chat-send")
    page.wait_for_selector("#chat-done")
    page.screenshot(path=artifacts / "chat.png", full_page=True)
    # Gradio shows a placeholder in the empty reply until the first piece arrives.
    replies = [r for r in page.evaluate("window.replies") if r != "Loading content"]
    assert len(replies) >= 2, f"the reply did not grow piece by piece: {replies}"
    # What the SDK gets from the same server for the same conversation (greedy, the page's defaults).
    expected = client.pipeline("text-generation")(
        [{"role": "user", "content": question}], max_new_tokens=64, return_full_text=False
    )[0]["generated_text"]
    if is_available(CHAT_MODEL):  # plain prose (the tiny model's random bytes may render as markdown)
        final = " ".join(expected.split())
        assert " ".join(replies[-1].split()) == final
        assert all(final.startswith(" ".join(partial.split())) for partial in replies), replies
        assert "Paris" in final


def test_detection_draws_the_boxes(page: Any, client: Client, artifacts: Path, tmp_path: Path) -> None:
    from PIL import Image
    from pipelined.demo.convert import label_colors

    picture = _image_file(tmp_path)
    _tab(page, "vision", "Detection")
    page.locator("#object-detection-image input[type=file]").set_input_files(str(picture))
    threshold = page.locator("#object-detection-threshold input[type=number]")
    threshold.fill("0.3")  # the tiny detector's boxes score ~0.32
    threshold.press("Enter")
    page.click("#object-detection-run")
    expected = client.pipeline("object-detection")(str(picture), threshold=0.3)
    assert expected, "the tiny detector found nothing to draw"
    drawn = page.locator("#object-detection-out img")
    drawn.wait_for()
    page.screenshot(path=artifacts / "vision.png", full_page=True)
    table = page.inner_text("#object-detection-table")
    for box in expected:
        assert box["label"] in table and str(box["box"]["xmax"]) in table
    # The boxes are in the picture the page shows: each box's left edge has a label's colour.
    response = page.request.get(drawn.get_attribute("src"))
    shown = np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))
    colors = {tuple(c) for c in label_colors(expected).values()}
    for box in expected:
        x, y = box["box"]["xmin"], (box["box"]["ymin"] + box["box"]["ymax"]) // 2
        assert tuple(int(v) for v in shown[y, x]) in colors, (box, shown[y, x])


def test_text_and_image_text_tabs_answer(page: Any, client: Client, artifacts: Path, tmp_path: Path) -> None:
    sentence = "My name is Sarah and I live in London."
    _tab(page, "text", "Entities")
    page.locator("#token-classification-input textarea").fill(sentence)
    page.click("#token-classification-run")
    expected = client.pipeline("token-classification")(sentence, aggregation_strategy="simple")
    # The text comes back with a label after each entity (the tiny model's spans cut words anywhere).
    page.wait_for_function(
        "document.querySelector('#token-classification-out') && "
        "document.querySelector('#token-classification-out').innerText.includes('London')"
    )
    shown = page.inner_text("#token-classification-out")
    groups = {entity["entity_group"] for entity in expected}
    assert sum(shown.count(group) for group in groups) == len(expected), shown
    page.screenshot(path=artifacts / "text.png", full_page=True)

    picture = _image_file(tmp_path)
    _tab(page, "multimodal")
    page.locator("#image-text-to-text-image input[type=file]").set_input_files(str(picture))
    page.click("#image-text-to-text-run")
    chat = [
        {
            "role": "user",
            "content": [
                {"type": "image", "path": str(picture)},
                {"type": "text", "text": "Describe this image."},
            ],
        }
    ]
    answer = "".join(client.pipeline("image-text-to-text").stream(text=chat, max_new_tokens=64))
    page.wait_for_function(
        "(expected) => document.querySelector('#image-text-to-text-out textarea').value === expected",
        arg=answer,
    )
    page.screenshot(path=artifacts / "multimodal.png", full_page=True)


def test_server_errors_are_readable_messages(
    page: Any, client: Client, tmp_path: Path, artifacts: Path
) -> None:
    _need_asr(client)
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(b"this is not audio at all" * 100)
    _tab(page, "file")
    page.locator("#file-audio input[type=file]").set_input_files(str(bad))
    page.click("#file-run")
    toast = page.locator(".toast-body").first
    toast.wait_for()
    page.screenshot(path=artifacts / "error.png", full_page=True)
    assert "INVALID_ARGUMENT" in toast.inner_text()
    stopped = page.locator("#file-progress[data-finished=error]")
    stopped.wait_for()
    assert "INVALID_ARGUMENT" in stopped.inner_text()
    assert "Traceback" not in page.content()


def test_interface_is_from_pipeline_for_a_remote_pipeline(
    browser: Any, client: Client, tmp_path: Path
) -> None:
    import gradio as gr
    from pipelined.demo import interface

    pipe = client.pipeline("object-detection", threshold=0.3)
    with pytest.raises(ValueError, match="transformers"):
        gr.Interface.from_pipeline(pipe)  # why interface() exists: Gradio's needs transformers' classes
    picture = _image_file(tmp_path)
    interface(pipe)  # a first call must not shadow the function with a submodule of the same name
    app = interface(pipe)
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(WAIT_MS)
        opened = context.new_page()
        opened.goto(f"http://127.0.0.1:{port}/")
        opened.locator("input[type=file]").first.set_input_files(str(picture))
        opened.get_by_role("button", name="Submit").click()
        boxes = len(pipe(str(picture)))
        opened.wait_for_function(f"document.querySelectorAll('img.mask').length === {boxes}")
        context.close()
    finally:
        app.close()


def test_demo_forwards_tls_and_token_and_guards_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    from pipelined.cli import build_parser
    from pipelined.demo.command import credentials, page_options, secured

    monkeypatch.setenv("PIPELINED_TOKEN", "s3cret")
    args = build_parser().parse_args(["demo", "--target", "h:1", "--ca-file", "ca.pem", "--port", "8080"])
    assert (args.target, args.port, args.host) == ("h:1", 8080, "127.0.0.1")
    assert credentials(args) == {"ca_file": "ca.pem", "token": "s3cret"}
    login = page_options(args)["auth"]
    assert login("anyone", "s3cret") and not login("anyone", "guess")
    if "token" not in inspect.signature(Client).parameters:  # until the client takes them: a clear stop
        with pytest.raises(SystemExit, match="no ca_file, token option"):
            secured(Client("h:1"), args)
    monkeypatch.delenv("PIPELINED_TOKEN")
    plain = build_parser().parse_args(["demo"])
    assert credentials(plain) == {} and page_options(plain) == {}
    with pytest.raises(SystemExit, match="go together"):
        page_options(build_parser().parse_args(["demo", "--certfile", "page.pem"]))


def test_the_demo_imports_neither_torch_nor_transformers_nor_the_server() -> None:
    probe = (
        "import sys, pipelined.cli, pipelined.demo.app, pipelined.demo.single; "
        "print([m for m in ('torch', 'transformers', 'pipelined_server') if m in sys.modules])"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "client"))
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
