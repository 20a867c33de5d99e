"""The commit rule: LocalAgreement-2 (Machácek et al., whisper_streaming) over the words of a window.

Each decode of an utterance's window gives a hypothesis: all the words heard since the window's start.
Words that two successive hypotheses agree on (after the words already final) become final; the rest
stay interim. Hypotheses may reword the already-final part slightly, so it is found in each new
hypothesis by sequence alignment rather than by position.
"""

from __future__ import annotations

import difflib
import string
from dataclasses import dataclass, field

# How far past the last committed word's end a hypothesis word may start and still be aligned with it.
_ALIGN_SLACK_S = 1.0
_PUNCTUATION = str.maketrans("", "", string.punctuation + "¿¡…“”‘’")


@dataclass(frozen=True)
class Word:
    """One word with its times in seconds from the start of the stream."""

    text: str
    start: float
    end: float


def normalize(text: str) -> str:
    """The form words are compared in: case and punctuation changes between decodes do not count. Case by
    casefold(), not lower(): "STRASSE" is "Straße" in capitals, and lower() keeps the "ß" apart."""
    return text.casefold().translate(_PUNCTUATION).strip()


def common_prefix(a: list[Word], b: list[Word]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if normalize(x.text) != normalize(y.text):
            break
        n += 1
    return n


@dataclass
class LocalAgreement:
    """Commit state of one window; `reset()` when the window moves past everything committed."""

    # Final words that the current window still contains (the window starts before or at them).
    committed: list[Word] = field(default_factory=list)
    # The previous hypothesis' words after its committed part.
    previous_tail: list[Word] | None = None

    def after_committed(self, hypothesis: list[Word]) -> int:
        """Index of the first word of `hypothesis` that comes after the committed words."""
        if not self.committed:
            return 0
        done = [normalize(w.text) for w in self.committed]
        words = [normalize(w.text) for w in hypothesis]
        if words[: len(done)] == done:
            return len(done)
        # Only words heard around the committed ones may be them: a common word ("the", "you") seconds
        # later must not match, or every word before it would be skipped as already final (speech lost).
        edge = self.committed[-1].end + _ALIGN_SLACK_S
        words = words[: sum(1 for w in hypothesis if w.start <= edge)]
        blocks = [
            b
            for b in difflib.SequenceMatcher(None, done, words, autojunk=False).get_matching_blocks()
            if b.size
        ]
        if not blocks:
            # Nothing in common: trust the times instead, skipping words that end before the committed end.
            edge = self.committed[-1].end
            return sum(1 for w in hypothesis if w.end <= edge + 0.05)
        last = blocks[-1]
        unmatched_committed = len(done) - (last.a + last.size)
        after = last.b + last.size
        # Committed words after the last match count as heard only where the hypothesis has words in time.
        return min(len(words), after + unmatched_committed)

    def update(self, hypothesis: list[Word], settled_s: float | None = None) -> tuple[list[Word], list[Word]]:
        """Commits what this and the previous hypothesis agree on, and the words up to the first that ends
        after `settled_s` (heard with enough after them to be final from one decode); returns (newly final,
        still interim)."""
        new = hypothesis[self.after_committed(hypothesis) :]
        agreed = 0 if self.previous_tail is None else common_prefix(new, self.previous_tail)
        if settled_s is not None:
            settled = next((k for k, w in enumerate(new) if w.end > settled_s), len(new))
            agreed = max(agreed, settled)
        final, tail = new[:agreed], new[agreed:]
        self.committed.extend(final)
        self.previous_tail = tail
        return final, tail

    def finish(self, hypothesis: list[Word]) -> list[Word]:
        """The window is complete: everything after the committed words becomes final."""
        rest = hypothesis[self.after_committed(hypothesis) :]
        self.committed.extend(rest)
        self.previous_tail = []
        return rest

    def force(self, hypothesis: list[Word], upto: int) -> list[Word]:
        """Makes the hypothesis final up to index `upto` whatever the agreement (a window grown too long)."""
        start = self.after_committed(hypothesis)
        final = hypothesis[start:upto] if upto > start else []
        self.committed.extend(final)
        self.previous_tail = None
        return final

    def keep_after(self, time_s: float) -> None:
        """The window now starts at `time_s`: committed words before it are gone from its hypotheses."""
        self.committed = [w for w in self.committed if w.start >= time_s]
        self.previous_tail = None
