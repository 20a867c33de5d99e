"""Word error rate with the usual normalisation (case, punctuation, simple digits as words); used by tests and bench."""

from __future__ import annotations

import re

import jiwer

_NUMBERS = {"1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "21st": "twenty first"}


def normalize(text: str) -> str:
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^\w\s']", " ", text)
    words = [_NUMBERS.get(w, w) for w in text.split()]
    return " ".join(words)


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalize(reference), normalize(hypothesis) or "<empty>"))
