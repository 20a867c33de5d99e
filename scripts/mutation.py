"""`make mutation`: mutation testing of the serving core with mutmut 3 (issue 16), within a budget this machine
affords, ending with the line `mutation score: K/N killed`.

Mutated: the status mapping (services/calls.py), every task adapter's batching choice (the `key=` and
`batchable=` of the work items in tasks/*.py), the scheduler (batching/scheduler.py) and the live-stream commit
policy (streaming/agreement.py), each with the few fast tests that claim them (GROUPS below); the
survivors and why each is equivalent are listed in tests/MUTATION.md.

mutmut names a mutant after its file's path from the project root (`src.` stripped) and expects the tests to
import it under that name; this project's package lives in server/, so the run happens in build/mutation, where
`src` is a link to server/ and `tests` to tests/, with [tool.mutmut] of pyproject.toml. Usage:
`scripts/mutation.py [--report] [GROUP ...]` (default: every group); a group's mutants are those whose name
matches; mutants not run (a run cut short) count as not killed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "build" / "mutation"

# group -> (mutant name patterns, the tests that claim the behaviour, seconds a test may take before a mutant that
# hangs it counts as killed: mutmut's own limit is CPU time, which a mutant waiting forever never spends)
GROUPS: dict[str, tuple[list[str], list[str], int]] = {
    "calls": (
        [
            "pipelined_server.services.calls.x__status_of__mutmut_*",
            "pipelined_server.services.calls.x__ended_early__mutmut_*",
        ],
        ["tests/server/test_calls.py", "tests/e2e/test_server_failures.py"],
        300,
    ),
    "asr": (
        ["pipelined_server.tasks.asr.x_plan__mutmut_*"],
        ["tests/server/test_keys_asr.py"],
        60,
    ),
    "text_generation": (
        [
            "pipelined_server.tasks.text_generation.x_batch_key__mutmut_*",
            "pipelined_server.tasks.text_generation.xǁTextGenerationǁitems__mutmut_*",
        ],
        ["tests/server/test_keys_text_generation.py"],
        60,
    ),
    "scheduler": (
        ["pipelined_server.batching.scheduler.*__mutmut_*"],
        ["tests/server/test_scheduler.py"],
        20,
    ),
    "agreement": (
        ["pipelined_server.streaming.agreement.*__mutmut_*"],
        ["tests/server/test_streaming_policy.py"],
        20,
    ),
    "vision": (
        [
            "pipelined_server.tasks.vision.x_any_size__mutmut_*",
            "pipelined_server.tasks.vision.x_same_size__mutmut_*",
        ],
        ["tests/server/test_keys_vision.py"],
        60,
    ),
    "audio_tasks": (
        [
            "pipelined_server.tasks.audio_tasks.x_same_length__mutmut_*",
            "pipelined_server.tasks.audio_tasks.xǁTextToAudioǁitems__mutmut_*",
        ],
        ["tests/server/test_keys_audio_tasks.py"],
        60,
    ),
    "image_text": (
        [
            "pipelined_server.tasks.image_text.x__load_prompt__mutmut_*",
            "pipelined_server.tasks.image_text.x_prompt_items__mutmut_*",
        ],
        ["tests/server/test_keys_image_text.py"],
        60,
    ),
    "document_qa": (
        ["pipelined_server.tasks.document_qa.x__load__mutmut_*"],
        [
            "tests/server/test_keys_document_qa.py",
            "tests/e2e/test_document_ocr.py::test_ocr_is_bounded_in_time",
        ],
        60,
    ),
    "feature_extraction": (
        [
            "pipelined_server.tasks.feature_extraction.x__token_count__mutmut_*",
            "pipelined_server.tasks.feature_extraction.xǁFeatureExtractionǁitems__mutmut_*",
        ],
        ["tests/server/test_keys_feature_extraction.py"],
        60,
    ),
}


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _prepare(tests: list[str], timeout: int) -> None:
    """A fresh build/mutation: links to the sources and tests, and pyproject.toml with the tests to run."""
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    (WORK / "src").symlink_to(REPO / "server")
    (WORK / "tests").symlink_to(REPO / "tests")
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    # [tool.mutmut] is the last table mutmut reads; the selection of this run is added to it.
    text += f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
    text += f"pytest_add_cli_args = {_toml_list(['-p', 'no:cacheprovider', '-q', '-x', f'--timeout={timeout}'])}\n"
    (WORK / "pyproject.toml").write_text(text, encoding="utf-8")


def _results() -> dict[str, int | None]:
    """Exit code of every mutant mutmut generated (None: not run), from its .meta files."""
    codes: dict[str, int | None] = {}
    for meta in (WORK / "mutants").rglob("*.meta"):
        codes.update(json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"])
    return codes


def main(argv: list[str]) -> int:
    from mutmut.stats import status_by_exit_code

    # --report: the scores of the last run (build/mutation), e.g. of one cut short, without running anything.
    report_only = "--report" in argv
    argv = [a for a in argv if a != "--report"]
    groups = argv or list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        print(f"unknown group(s) {unknown}; known: {list(GROUPS)}", file=sys.stderr)
        return 2
    patterns = [p for g in groups for p in GROUPS[g][0]]
    tests = [t for g in groups for t in GROUPS[g][1]]
    returncode = 0
    if not report_only:
        _prepare(tests, max(GROUPS[g][2] for g in groups))
        env = {**os.environ, "PYTHONPATH": str(REPO / "client"), "HF_HUB_OFFLINE": "1"}
        mutmut = [sys.executable, "-m", "mutmut", "run", "--max-children", "1", *patterns]
        returncode = subprocess.run(mutmut, cwd=WORK, env=env).returncode
    codes = _results()
    killed_total = total = 0
    for group in groups:
        names = sorted(n for n in codes if any(fnmatch.fnmatchcase(n, p) for p in GROUPS[group][0]))
        statuses = {n: status_by_exit_code[codes[n]] for n in names}
        # A timeout is a kill: the mutant made the tests hang (mutmut counts it so too).
        killed = sum(s in ("killed", "timeout") for s in statuses.values())
        print(f"{group}: {killed}/{len(names)} killed")
        for name, status in statuses.items():
            if status not in ("killed", "timeout"):
                print(f"    {status}: {name}")
        killed_total, total = killed_total + killed, total + len(names)
    if returncode != 0:
        print(f"mutmut exited {returncode}", file=sys.stderr)
    print(f"mutation score: {killed_total}/{total} killed")
    return returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
