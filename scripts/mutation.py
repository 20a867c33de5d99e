"""`make mutation`: mutation testing of the serving core with mutmut 3 (issue 16), within a budget this machine
affords, ending with the line `mutation score: K/N killed`.

Mutated: the status mapping (services/calls.py), every task adapter's batching choice (the `key=` and
`batchable=` of the work items in tasks/*.py), the scheduler (batching/scheduler.py) and the live-stream commit
policy (streaming/agreement.py), each with the few fast tests that claim them (GROUPS below); the
survivors and why each is equivalent are listed in tests/MUTATION.md.

mutmut names a mutant after its file's path from the project root (`src.` stripped) and expects the tests to
import it under that name; this project's package lives in server/, so the run happens in build/mutation, where
`src` is a link to server/ and `tests` to tests/, with [tool.mutmut] of pyproject.toml. Usage:
`scripts/mutation.py [--report] [--each] [--match GLOB] [GROUP ...]` (default: every group); a group's mutants
are those whose name matches; mutants not run (a run cut short) count as not killed.

--each: mutmut only generates the mutants; each mutant then runs in a fresh pytest through mutmut's own trampoline
(`MUTANT_UNDER_TEST=<name>` in build/mutation/mutants), bounded by a wall clock. It costs the start of a pytest per
mutant (about 5 s here) but no more: mutmut's forked workers were seen to ignore pytest's `--timeout`, so a mutant
that makes a test hang or raise in a worker thread ran to mutmut's CPU limit (about 3 minutes each on this
machine) instead of failing in seconds. --match narrows the mutants to those whose name matches GLOB (several
globs: separated by commas; e.g. `--each --match '*_ended_early*' calls`). The results land in mutmut's .meta
files, so --report reads either mode.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import time
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


def _pytest_args(timeout: int) -> list[str]:
    return ["-p", "no:cacheprovider", "-q", "-x", f"--timeout={timeout}"]


def _prepare(tests: list[str], timeout: int) -> None:
    """A fresh build/mutation: links to the sources and tests, and pyproject.toml with the tests to run."""
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    (WORK / "src").symlink_to(REPO / "server")
    (WORK / "tests").symlink_to(REPO / "tests")
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    # [tool.mutmut] is the last table mutmut reads; the selection of this run is added to it.
    text += f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
    text += f"pytest_add_cli_args = {_toml_list(_pytest_args(timeout))}\n"
    (WORK / "pyproject.toml").write_text(text, encoding="utf-8")


def _generate(env: dict[str, str]) -> None:
    """mutmut's generation step alone (the same calls its `run` makes before any test): build/mutation/mutants with
    the mutated sources, a copy of tests/ and a .meta file per source listing its mutants (not run yet)."""
    code = (
        "from mutmut.__main__ import create_mutants\n"
        "from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir\n"
        "copy_src_dir(); copy_also_copy_files(); create_mutants(1)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=WORK, env=env, check=True, stdout=subprocess.DEVNULL)


def _metas() -> list[Path]:
    return sorted((WORK / "mutants").rglob("*.meta"))


def _record(name: str, code: int) -> None:
    """Stores a mutant's exit code in its .meta file, where mutmut's own run stores it."""
    for meta in _metas():
        data = json.loads(meta.read_text(encoding="utf-8"))
        if name in data["exit_code_by_key"]:
            data["exit_code_by_key"][name] = code
            meta.write_text(json.dumps(data, indent=4), encoding="utf-8")
            return


def _matches(name: str, match: str) -> bool:
    """`match`: one glob or several separated by commas."""
    return any(fnmatch.fnmatchcase(name, glob) for glob in match.split(","))


def _number(name: str) -> tuple[str, int]:
    head, _, n = name.rpartition("__mutmut_")
    return head, int(n)


def _run_each(group: str, match: str, env: dict[str, str]) -> None:
    """Each mutant of `group` (whose name matches `match`) in a fresh pytest, its exit code recorded."""
    patterns, tests, timeout = GROUPS[group]
    chosen = [n for n in _results() if _matches(n, match)]
    names = sorted((n for n in chosen if any(fnmatch.fnmatchcase(n, p) for p in patterns)), key=_number)
    pytest = [sys.executable, "-m", "pytest", *_pytest_args(timeout), *tests]
    for name in names:
        started = time.monotonic()
        # Its own session, so a mutant that outlives the wall clock is ended with every process it started.
        proc = subprocess.Popen(
            pytest,
            cwd=WORK / "mutants",
            env={**env, "MUTANT_UNDER_TEST": name},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=5 * timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = 36  # mutmut's "timeout": the mutant made the tests hang, a kill
        _record(name, code)
        print(f"{name}: exit {code} ({time.monotonic() - started:.0f} s)", flush=True)


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
    each = "--each" in argv
    match = "*"
    if "--match" in argv:
        at = argv.index("--match")
        match = argv[at + 1]
        argv = argv[:at] + argv[at + 2 :]
    argv = [a for a in argv if a not in ("--report", "--each")]
    groups = argv or list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        print(f"unknown group(s) {unknown}; known: {list(GROUPS)}", file=sys.stderr)
        return 2
    patterns = [p for g in groups for p in GROUPS[g][0]]
    tests = [t for g in groups for t in GROUPS[g][1]]
    returncode = 0
    if report_only:
        pass
    elif each:
        _prepare(tests, max(GROUPS[g][2] for g in groups))
        _generate({**os.environ, "PYTHONPATH": str(REPO / "client")})
        # The mutated package is src/ of build/mutation/mutants; the SDK (client/) is not mutated.
        env = {**os.environ, "PYTHONPATH": f"src{os.pathsep}{REPO / 'client'}", "HF_HUB_OFFLINE": "1"}
        for group in groups:
            _run_each(group, match, env)
    else:
        _prepare(tests, max(GROUPS[g][2] for g in groups))
        env = {**os.environ, "PYTHONPATH": str(REPO / "client"), "HF_HUB_OFFLINE": "1"}
        mutmut = [sys.executable, "-m", "mutmut", "run", "--max-children", "1", *patterns]
        returncode = subprocess.run(mutmut, cwd=WORK, env=env).returncode
    codes = {n: c for n, c in _results().items() if _matches(n, match)}
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
