"""The spec reference: every field of the YAML with its type, default and description, from the pydantic models
(so the docs cannot drift from the validator). Printed by `python -m thinktrace.compile --schema`."""

from __future__ import annotations

import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined


def _type_name(ann) -> str:
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(ann))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(_type_name(a) for a in typing.get_args(ann))
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(ann))}]"
    if ann is type(None):
        return "null"
    return getattr(ann, "__name__", str(ann))


def _models_in(ann) -> list[type[BaseModel]]:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for a in typing.get_args(ann) for m in _models_in(a)]


def field_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    rows = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        if field.is_required():
            default = "required"
        elif field.default_factory is not None:
            default = ""
        else:
            default = "" if field.default is PydanticUndefined else repr(field.default)
        rows.append((path, _type_name(field.annotation), default, (field.description or "").strip()))
        for sub in _models_in(field.annotation):
            is_list = typing.get_origin(field.annotation) is list or any(
                typing.get_origin(a) is list for a in typing.get_args(field.annotation))
            rows.extend(field_rows(sub, f"{path}[]." if is_list else f"{path}."))
    return rows


def markdown(model: type[BaseModel]) -> str:
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for path, typ, default, desc in field_rows(model):
        lines.append(f"| `{path}` | {typ.replace('|', '&#124;')} | {default.replace('|', '&#124;')} | "
                     f"{desc.replace('|', '&#124;')} |")
    return "\n".join(lines)
