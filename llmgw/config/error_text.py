"""Pydantic's validation errors as config-file lines: `key.path: what is wrong`, with a
did-you-mean for a misspelt key or value."""

from __future__ import annotations

import difflib
import re
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError


def one_line(key: str, msg: str) -> str:
    """`key: msg.`, the message's own final punctuation kept."""
    return f"{key}: {msg}" + ("" if msg.endswith((".", "?", "!")) else ".")


def describe(exc: ValidationError, root: type[BaseModel]) -> list[tuple[str, str]]:
    """(key path, message) for each error of `root.model_validate`, in pydantic's order."""
    found = []
    for err in exc.errors():
        key = _loc(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if msg.startswith("["):  # list-level validator: make the index part of the key
            key, _, msg = f"{key}{msg}".partition(" ")
        elif key == "<root>":  # cross-reference check: its message starts with the key
            key, _, msg = msg.partition(" ")
            key = key.rstrip(":")
        elif err["type"] == "extra_forbidden":
            where = (" (not an argument of litellm.Router)"
                     if err["loc"][0] == "router_settings" and len(err["loc"]) == 2 else "")
            msg = f"unknown key{where}" + _did_you_mean(str(err["loc"][-1]),
                                                        _keys_at(root, err["loc"][:-1]))
        elif err["type"] == "literal_error":
            expected = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
            msg += _did_you_mean(str(err["input"]), expected)
        found.append((key, msg))
    return found


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _keys_at(root: type[BaseModel], path: tuple[int | str, ...]) -> list[str]:
    """The keys the model at `path` (a key path into `root`) accepts; [] if not a model."""
    tp: Any = root
    for part in path:
        tp = _child(tp, part)
        if tp is None:
            return []
    model = _model_of(tp)
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _child(tp: Any, part: int | str) -> Any:
    model = _model_of(tp)
    if model is not None:
        for name, field in model.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
        return None
    tp = _strip(tp)
    origin = get_origin(tp)
    if origin is list:
        return get_args(tp)[0]
    if origin is dict:
        return get_args(tp)[1]
    return None


def _strip(tp: Any) -> Any:
    """`X | None`, `Annotated[X, ...]` -> X; of several alternatives, the model or container."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            structured = [a for a in args if _is_model(_strip(a))
                          or get_origin(_strip(a)) in (list, dict)]
            if len(args) != 1 and not structured:
                return tp
            tp = args[0] if len(args) == 1 else structured[0]
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _model_of(tp: Any) -> type[BaseModel] | None:
    tp = _strip(tp)
    return tp if _is_model(tp) else None
