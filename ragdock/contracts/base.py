"""What every contract shares: strict pydantic models, and errors that name the file, the field
and the fix.

A contract is a file format (or a payload) one package writes and another reads. Each is a
pydantic model that forbids unknown fields, so a misspelt key fails where it is read instead of
being silently ignored, and the message says which file, which field, and what to do about it.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError


class Contract(BaseModel):
    """Base of every contract: unknown fields are refused, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


C = TypeVar("C", bound=Contract)


class ContractError(ValueError):
    """A file or payload does not hold the shape its contract defines.

    Attributes:
        source: the file (or payload) that was read.
        problems: one `(field, message)` per problem, the field written as a dotted path.
        fix: what the reader should do.
    """

    def __init__(self, source: str, problems: list[tuple[str, str]], fix: str) -> None:
        self.source, self.problems, self.fix = source, problems, fix
        listed = "; ".join(f"field `{name}`: {message}" for name, message in problems)
        super().__init__(f"{source}: {listed}. Fix: {fix}")


def parse(model: type[C], data: object, *, source: str, fix: str) -> C:
    """Validate `data` as `model`.

    Raises:
        ContractError: a field is missing, unknown or of the wrong type (each one named, with
            the closest known name for a misspelt one).
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ContractError(source, _problems(model, exc), fix) from None


def read_json(path: Path) -> Any:
    """The JSON value in `path`.

    Raises:
        ContractError: the file cannot be read or is not JSON.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(str(path), [("(file)", str(exc))], "write it again") from None
    except RecursionError:  # a hostile file: arrays nested thousands deep
        raise ContractError(str(path), [("(file)", "nests too deeply")], "write it again") from None


def write_json_atomic(path: Path, model: BaseModel) -> None:
    """Write `model` as indented JSON through a rename: a reader (or a kill mid-write) sees the
    old file or the new one, never half of one."""
    staged = path.with_name(f".{path.name}.{os.getpid()}.partial")
    staged.write_text(model.model_dump_json(indent=2, exclude_none=False) + "\n", encoding="utf-8")
    os.replace(staged, path)


def _problems(model: type[BaseModel], exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(root)"
        message = str(error["msg"]).lower()
        if error["type"] == "extra_forbidden":
            message = "is not a field of this format"
            near = _closest(model, error["loc"])
            if near:
                message += f" (did you mean `{near}`?)"
        elif error["type"] == "missing":
            message = "is required but missing"
        problems.append((where, message))
    return problems


def _closest(model: type[BaseModel], loc: tuple[int | str, ...]) -> str | None:
    """The known field name closest to an unknown one, walking nested models along `loc`."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or not _is_model(current):
            current = _inner_model(current)
            if isinstance(part, int):
                continue
        if not _is_model(current) or part not in current.model_fields:
            return None
        current = _inner_model(current.model_fields[part].annotation)
    if not _is_model(current):
        return None
    names = list(current.model_fields)
    found = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    return found[0] if found else None


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _inner_model(annotation: Any) -> Any:
    """The model inside `X | None`, `list[X]` or `dict[str, X]`, else the annotation itself."""
    if _is_model(annotation):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        inner = _inner_model(arg)
        if _is_model(inner):
            return inner
    return annotation


def as_mapping(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None
