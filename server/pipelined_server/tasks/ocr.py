"""OCR of document pages for document-question-answering: Tesseract (Debian's `tesseract-ocr` through
pytesseract), giving the words and boxes the local pipeline's own OCR gives (transformers' `apply_tesseract`:
non-blank Tesseract words, boxes normalised to 0-1000), with a time bound it lacks.

Tesseract runs as a subprocess, so a page that takes too long is killed, not left running.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from ..errors import FailedPrecondition, InvalidInput

# The OCR of one request's pages: a letter-size page takes ~3 s on a loaded 2-core machine; pages still unread
# after this are refused, and the running subprocess killed.
OCR_TIMEOUT_S = 60.0
_LANGUAGE = re.compile(r"[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*")

WordBoxes = list[tuple[str, list[int]]]


_NO_TESSERACT = (
    "this server has no OCR (the tesseract-ocr package is not installed): send the page's word_boxes"
)


@functools.cache
def installed_languages() -> frozenset[str]:
    """Tesseract's installed languages; FailedPrecondition when the server has no OCR."""
    try:
        import pytesseract
    except ImportError as exc:
        raise FailedPrecondition(
            "this server has no OCR (pip install pytesseract): send the page's word_boxes"
        ) from exc
    try:
        return frozenset(pytesseract.get_languages(config=""))
    except pytesseract.TesseractNotFoundError as exc:
        raise FailedPrecondition(_NO_TESSERACT) from exc


def check_language(language: str) -> None:
    """`deu`, `eng+fra`, ...: each part one of the installed languages."""
    if not language:
        return
    if not _LANGUAGE.fullmatch(language):
        raise InvalidInput(
            f"ocr_language {language!r} is not a Tesseract language code such as 'eng' or 'eng+deu'"
        )
    missing = set(language.split("+")) - installed_languages()
    if missing:
        raise InvalidInput(
            f"ocr_language {language!r}: {', '.join(sorted(missing))} not installed on this server "
            f"(installed: {', '.join(sorted(installed_languages()))})"
        )


def read_words(image: Any, language: str = "", timeout_s: float = OCR_TIMEOUT_S) -> WordBoxes:
    """Blocking: the page's words with boxes normalised to 0-1000, as the pipeline's OCR returns them."""
    installed_languages()
    import pytesseract
    from transformers.pipelines.document_question_answering import normalize_box

    try:
        data = pytesseract.image_to_data(
            image, lang=language or None, output_type=pytesseract.Output.DICT, config="", timeout=timeout_s
        )
    except pytesseract.TesseractNotFoundError as exc:  # removed after the languages were listed
        raise FailedPrecondition(_NO_TESSERACT) from exc
    except pytesseract.TesseractError as exc:
        raise InvalidInput(f"OCR of the page failed: {exc.message}") from exc
    except RuntimeError as exc:  # pytesseract's timeout (TesseractError is a RuntimeError too: caught above)
        raise InvalidInput(
            f"OCR of the page was stopped after {timeout_s:.1f} s (the server allows {OCR_TIMEOUT_S:.0f} s "
            "of OCR per request): send its word_boxes or a smaller page"
        ) from exc
    width, height = image.size
    return [
        (word, normalize_box([x, y, x + w, y + h], width, height))
        for word, x, y, w, h in zip(
            data["text"], data["left"], data["top"], data["width"], data["height"], strict=True
        )
        if word.strip()
    ]
