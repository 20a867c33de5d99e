"""The commit rule, the rolling buffer and the speech detector, on their own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from paths import shared_file
from pipelined_server.streaming.agreement import LocalAgreement, Word
from pipelined_server.streaming.buffer import RollingBuffer
from pipelined_server.streaming.decode import hypothesis
from pipelined_server.streaming.vad import SpeechDetector


def words(text: str, start: float = 0.0) -> list[Word]:
    return [Word(w, start + i * 0.5, start + i * 0.5 + 0.4) for i, w in enumerate(text.split())]


def test_local_agreement_commits_what_two_hypotheses_share() -> None:
    policy = LocalAgreement()
    assert policy.update(words("and so")) == ([], words("and so"))
    final, tail = policy.update(words("and so my fellow"))
    assert [w.text for w in final] == ["and", "so"] and [w.text for w in tail] == ["my", "fellow"]
    # Case and punctuation changes do not block agreement; the committed part may be reworded.
    final, tail = policy.update(words("And so, my fellow Americans"))
    assert [w.text for w in final] == ["my", "fellow"] and [w.text for w in tail] == ["Americans"]
    assert [w.text for w in policy.finish(words("and so my fellow Americans ask"))] == ["Americans", "ask"]


def test_words_settled_long_enough_before_the_end_are_final_from_one_decode() -> None:
    # An AlignAtt interim: words ending by `settled_s` are final at once, up to the first that ends later.
    policy = LocalAgreement()
    final, tail = policy.update(words("and so my fellow"), settled_s=0.9)  # ends 0.4 0.9 1.4 1.9
    assert [w.text for w in final] == ["and", "so"] and [w.text for w in tail] == ["my", "fellow"]
    # Agreement still commits on its own, beyond what has settled.
    final, tail = policy.update(words("and so my fellow Americans"), settled_s=0.0)
    assert [w.text for w in final] == ["my", "fellow"] and [w.text for w in tail] == ["Americans"]
    # A word that ends later stops the settled run, even if words after it end earlier.
    policy = LocalAgreement()
    late = [Word("one", 0.0, 0.4), Word("two", 0.5, 2.0), Word("three", 1.0, 1.2)]
    assert [w.text for w in policy.update(late, settled_s=1.5)[0]] == ["one"]


def test_finals_are_never_repeated_when_the_hypothesis_rewords_the_past() -> None:
    policy = LocalAgreement()
    policy.update(words("the quick brown"))
    policy.update(words("the quick brown fox"))  # commits the quick brown
    rest = policy.finish(words("a quick brown fox jumps"))
    assert [w.text for w in rest] == ["fox", "jumps"]


def test_keep_after_forgets_words_before_the_new_window() -> None:
    policy = LocalAgreement(committed=words("one two three four"))
    policy.keep_after(1.0)
    assert [w.text for w in policy.committed] == ["three", "four"]


def test_segment_output_becomes_timed_words_and_cuts() -> None:
    output = {
        "chunks": [
            {"text": " Hello big", "timestamp": (0.0, 1.0)},
            {"text": " world", "timestamp": (1.0, None)},
        ]
    }
    hyp = hypothesis(output, offset_s=10.0, duration_s=2.0)
    assert [w.text for w in hyp.words] == ["Hello", "big", "world"]
    assert hyp.words[0].start == 10.0 and hyp.words[1].end == 11.0 and hyp.words[2].end == 12.0
    assert hyp.cuts == [(2, 11.0)]  # the open last segment is no cut


def test_rolling_buffer_addresses_absolute_samples_and_trims() -> None:
    buffer = RollingBuffer()
    for i in range(10):
        buffer.append(np.full(100, i, np.float32), arrived=float(i))
    buffer.trim(450)
    assert buffer.start == 450 and buffer.end == 1000 and buffer.held == 550
    assert buffer.slice(400, 520).tolist() == [4.0] * 50 + [5.0] * 20
    assert buffer.arrival_of(1000) == 9.0 and buffer.arrival_of(501) == 5.0


def test_a_pause_is_seen_where_the_speech_end_is_later_declared() -> None:
    """The session decodes up to a pause at once (final priority) so the final can reuse that decode:
    this holds only if the pause starts exactly where the end of speech is declared `min_silence` later."""
    from pipelined_server.audio import decode_encoded

    audio = decode_encoded(Path(shared_file("audio/jfk.flac")).read_bytes(), 16000)
    detector = SpeechDetector(16000, 0.5, 0.5)
    pauses: set[int] = set()
    ends = []
    for i in range(0, len(audio), 1600):
        for event in detector.push(audio[i : i + 1600]):
            if not event.started:
                ends.append(event.sample)
        if detector.pause_from is not None:
            pauses.add(detector.pause_from)
    assert len(ends) >= 2, "jfk.flac has pauses between its sentences"
    assert set(ends) <= pauses


# ---- after_committed: where the committed words end in a new hypothesis (killing mutants, tests/MUTATION.md)


def _texts(ws: list[Word]) -> list[str]:
    return [w.text for w in ws]


def test_a_common_word_far_after_the_committed_ones_is_not_them() -> None:
    """'the' seconds later must not align with the committed 'the', or the words before it would be lost."""
    policy = LocalAgreement(committed=[Word("the", 0.0, 0.4)])
    hypothesis = [Word("a", 0.0, 0.4), Word("cat", 0.5, 0.9), Word("sat", 1.0, 1.3), Word("the", 3.0, 3.3)]
    # Within the slack (the committed end + 1 s) nothing matches: the times decide, and only "a" ends in time.
    assert policy.after_committed(hypothesis) == 1
    assert _texts(policy.finish(hypothesis)) == ["cat", "sat", "the"]


def test_with_nothing_in_common_the_times_decide_within_50_ms() -> None:
    policy = LocalAgreement(committed=[Word("one", 0.0, 0.5), Word("two", 0.6, 1.0)])
    hypothesis = [Word("x", 0.0, 0.5), Word("y", 0.6, 1.04), Word("z", 1.1, 1.5), Word("w", 1.6, 2.0)]
    assert policy.after_committed(hypothesis) == 2  # "y" ends 40 ms after the committed end: already final
    late = [Word("x", 0.0, 0.5), Word("y", 0.6, 1.06), Word("z", 1.1, 1.5)]
    assert policy.after_committed(late) == 1  # 60 ms after: new


def test_committed_words_after_the_last_match_count_as_heard() -> None:
    """'three' was committed but reworded 'thee': still final, so the new words start at 'four'."""
    policy = LocalAgreement(committed=words("one two three"))
    hypothesis = words("one two thee four five")
    assert policy.after_committed(hypothesis) == 3
    assert _texts(policy.finish(hypothesis)) == ["four", "five"]


def test_unmatched_committed_words_never_reach_past_the_hypothesis() -> None:
    policy = LocalAgreement(committed=words("one two three four"))
    # Only "one" matches; three committed words follow it, but the hypothesis has only two words in time.
    assert policy.after_committed(words("one tww")) == 2


def test_an_exact_prefix_is_skipped_whole() -> None:
    policy = LocalAgreement(committed=words("Hello, world"))
    assert policy.after_committed(words("hello world again")) == 2
    assert policy.after_committed(words("hello")) == 1


def test_force_commits_up_to_an_index_and_forgets_the_tail() -> None:
    policy = LocalAgreement()
    policy.update(words("a b c"))
    assert _texts(policy.force(words("a b c d"), 2)) == ["a", "b"]
    assert policy.previous_tail is None
    assert _texts(policy.committed) == ["a", "b"]
    assert policy.force(words("a b c d"), 1) == []  # nothing before the committed end
    assert _texts(policy.force(words("a b c d"), 4)) == ["c", "d"]


def test_keep_after_keeps_a_word_starting_exactly_at_the_new_window() -> None:
    policy = LocalAgreement(committed=words("one two three"))  # starts 0.0, 0.5, 1.0
    policy.keep_after(0.5)
    assert _texts(policy.committed) == ["two", "three"]


def test_alignment_wins_over_times_when_the_words_moved() -> None:
    """The decoder placed the words 0.3 s later this time: the times alone would say 'thee' is new."""
    policy = LocalAgreement(committed=words("one two three"))
    assert policy.after_committed(words("one two thee four five", start=0.3)) == 3


def test_a_word_starting_exactly_at_the_slack_edge_still_aligns() -> None:
    policy = LocalAgreement(committed=[Word("one", 0.0, 0.4)])  # edge: 0.4 + 1.0 s
    hypothesis = [Word("x", 0.0, 0.3), Word("y", 0.5, 0.9), Word("one", 1.4, 1.6), Word("z", 2.0, 2.4)]
    assert policy.after_committed(hypothesis) == 3


def test_agreement_stops_at_the_first_differing_word() -> None:
    policy = LocalAgreement()
    policy.update(words("a b c"))
    final, tail = policy.update(words("a b d"))
    assert _texts(final) == ["a", "b"] and _texts(tail) == ["d"]


def test_with_nothing_in_common_a_word_ending_exactly_50_ms_late_is_already_final() -> None:
    # 0.95 + 0.05 is exactly 1.0 in floating point: the boundary itself, not a value near it.
    policy = LocalAgreement(committed=[Word("one", 0.0, 0.95)])
    hypothesis = [Word("x", 0.0, 0.5), Word("y", 0.6, 1.0), Word("z", 1.1, 1.5)]
    assert policy.after_committed(hypothesis) == 2


def test_a_repetition_loop_of_hundreds_of_words_still_aligns() -> None:
    """Whisper can loop on a word ("the the the ...") and fill its window with hundreds of them. Every one
    counts in the alignment: none is ignored for being frequent (difflib's autojunk ignores a word that makes
    up more than 1% of 200 or more), or the times would decide and, with the words moved, finals would be
    repeated."""
    committed = [Word("the", i * 0.1, i * 0.1 + 0.08) for i in range(210)]
    policy = LocalAgreement(committed=committed)
    # The next decode heard a sound before the loop and placed the words 0.3 s later.
    moved = [Word(w.text, w.start + 0.3, w.end + 0.3) for w in committed]
    hypothesis = [Word("uh", 0.0, 0.05), *moved, Word("end", 21.5, 21.8)]
    assert policy.after_committed(hypothesis) == 211
    assert _texts(policy.finish(hypothesis)) == ["end"]


def test_a_case_change_that_changes_letters_still_agrees() -> None:
    """Upper case of "ß" is "SS": "Straße" and "STRASSE" are one word in another case."""
    policy = LocalAgreement()
    policy.update([Word("die", 0.0, 0.3), Word("Straße", 0.4, 0.9)])
    final, tail = policy.update([Word("die", 0.0, 0.3), Word("STRASSE", 0.4, 0.9), Word("entlang", 1.0, 1.4)])
    assert _texts(final) == ["die", "STRASSE"] and _texts(tail) == ["entlang"]
