"""The one validation idiom of the server's configuration: every section is a frozen pydantic model with
typed fields and unknown keys refused, and every error becomes a ConfigError naming its key path
(`models[1].replicas: ...`).

It lives below config.py because audio.py and images.py define their own sections (their limits) and
sit below config.py in the import order.

Types are pydantic's lax mode, which is what environment variables need (`PIPELINED_PORT=6000` is a
string): a number written as a string is accepted (`replicas: "2"` is 2), anything else that is not
exactly of the field's type is refused. Two coercions of lax mode are refused on purpose, because they
hide mistakes: a boolean is not a number (`replicas: true`), and a number is not a string.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from .errors import ConfigError

__all__ = ["Float", "Int", "Section", "config_error", "invalid"]


def _not_a_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("bool_is_not_a_number", "expected a number, not a boolean")
    return value


# Numbers that refuse booleans (lax pydantic reads `true` as 1).
Int = Annotated[int, BeforeValidator(_not_a_bool)]
Float = Annotated[float, BeforeValidator(_not_a_bool)]


class Section(BaseModel):
    """Base of every config section: immutable once validated, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def invalid(at: str, message: str) -> PydanticCustomError:
    """An error about `at`, a key path below the object being validated (a cross-field check in a model
    validator would otherwise be reported at the object, not at the key that is wrong)."""
    return PydanticCustomError("config", "{message}", {"message": message, "at": at})


# What a missing required key should hold, so the error says how to fix it.
_REQUIRED_HINTS = {
    "models": "at least one model is required",
    "name": "the name requests use to pick the model",
    "source": "'embedded:<name>', a local directory or a Hub id",
    "task": "a transformers pipeline task, e.g. automatic-speech-recognition",
}


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _section_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The section class that holds the last key of `loc` (for listing the keys it allows)."""
    current: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if (
            not (isinstance(current, type) and issubclass(current, BaseModel))
            or part not in current.model_fields
        ):
            return None
        current = _model_in(current.model_fields[part].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside `X`, `X | None`, `tuple[X, ...]` or `list[X]`, else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) in (
        typing.Union,
        tuple,
        list,
    ):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _describe(error: Mapping[str, Any], root: type[BaseModel]) -> str:
    loc = tuple(error["loc"])
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "config":
        at = ctx.get("at", "")
        path = _path(loc) + ("." if loc and at else "") + at
        return f"{path or 'config'}: {ctx['message']}"
    path = _path(loc) or "config"
    if kind == "missing":
        hint = _REQUIRED_HINTS.get(str(loc[-1]) if loc else "", "")
        return f"{path}: required" + (f" ({hint})" if hint else "")
    if kind == "extra_forbidden":
        section = _section_at(root, loc)
        allowed = sorted(section.model_fields) if section else []
        key = str(loc[-1])
        close = [a for a in allowed if a.startswith(key)] or difflib.get_close_matches(key, allowed, n=1)
        suggestion = f"; did you mean {close[0]!r}?" if close else ""
        return f"{path}: unknown key{suggestion} (allowed: {', '.join(allowed)})"
    shown = repr(error.get("input"))
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    # YAML and TOML have lists, not tuples.
    message = error["msg"].replace("a valid tuple", "a list")
    return f"{path}: {message} (got {shown})"


def config_error(
    exc: ValidationError, root: type[BaseModel], origins: Mapping[str, str] | None = None
) -> ConfigError:
    """One ConfigError listing every problem, each with its key path; `origins` maps key paths that came
    from environment variables to the variable's name, so the message says where to look."""
    lines = []
    for error in exc.errors():
        line = _describe(error, root)
        for path, variable in (origins or {}).items():
            if line.startswith(path + ":") or line.startswith(path + ".") or line.startswith(path + "["):
                line += f" [from {variable}]"
                break
        lines.append(line)
    if len(lines) == 1:
        return ConfigError(lines[0])
    return ConfigError(f"{len(lines)} problems:\n  " + "\n  ".join(lines))
