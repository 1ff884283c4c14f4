"""The new-job form, generated from an entrypoint's JSON Schema: one field per property (nested objects as
fieldsets), defaults as initial values, units from the title's parenthesis, the description as help text.

Only the translation between HTML form values and JSON lives here. Whether the values are *valid* is the
registry's call (`services.submit` → JSON Schema); its error is shown at the field it names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

PREFIX = "p."
_UNIT = re.compile(r"^(?P<label>.*?)\s*\((?P<unit>[^():,]{1,16})\)\s*$")


@dataclass
class Field:
    path: str  # dotted, e.g. "roi.x0"
    kind: str  # integer | number | boolean | select | text | list | json | object
    label: str
    unit: str = ""
    help: str = ""
    default: Any = None
    has_default: bool = False
    minimum: Any = None
    maximum: Any = None
    choices: list[tuple[str, str]] = field(default_factory=list)  # (json value, label)
    children: list[Field] = field(default_factory=list)
    value: str = ""  # as shown in the form
    checked: bool = False
    error: str = ""

    @property
    def name(self) -> str:
        return PREFIX + self.path

    @property
    def dom_id(self) -> str:
        return "param-" + self.path.replace(".", "-")

    @property
    def step(self) -> str:
        return "1" if self.kind == "integer" else "any"

    @property
    def bounds(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"{_num(self.minimum)} – {_num(self.maximum)}"
        if self.minimum is not None:
            return f"≥ {_num(self.minimum)}"
        if self.maximum is not None:
            return f"≤ {_num(self.maximum)}"
        return ""

    def leaves(self) -> list[Field]:
        return [leaf for c in self.children for leaf in c.leaves()] if self.kind == "object" else [self]


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _types(schema: dict[str, Any]) -> tuple[list[str], bool]:
    raw = schema.get("type", [])
    types = [raw] if isinstance(raw, str) else list(raw)
    nullable = "null" in types
    return [t for t in types if t != "null"], nullable


def _display(value: Any, kind: str) -> str:
    if kind == "select":
        return json.dumps(value)
    if value is None:
        return ""
    if kind == "list":
        return ", ".join(_num(v) if not isinstance(v, str) else v for v in value)
    if kind == "json":
        return json.dumps(value)
    return _num(value) if not isinstance(value, str) else value


def build(schema: dict[str, Any], values: dict[str, Any] | None = None, prefix: str = "") -> list[Field]:
    """Fields for the properties of an object schema; `values` (e.g. a cloned job's params) fill them."""
    values = values or {}
    fields = []
    for name, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}{name}"
        title = sub.get("title") or name.replace("_", " ").capitalize()
        match = _UNIT.match(title)
        label, unit = (match["label"], match["unit"]) if match else (title, "")
        types, _ = _types(sub)
        f = Field(path=path, kind="json", label=label, unit=unit, help=sub.get("description", ""),
                  default=sub.get("default"), has_default="default" in sub,
                  minimum=sub.get("minimum", sub.get("exclusiveMinimum")),
                  maximum=sub.get("maximum", sub.get("exclusiveMaximum")))
        current = values.get(name, sub.get("default"))
        if "enum" in sub:
            f.kind = "select"
            f.choices = [(json.dumps(v), "default" if v is None else str(v)) for v in sub["enum"]]
        elif types == ["object"] and sub.get("properties"):
            f.kind = "object"
            f.children = build(sub, current if isinstance(current, dict) else {}, prefix=path + ".")
        elif types == ["boolean"]:
            f.kind = "boolean"
            f.checked = bool(current)
        elif types in (["integer"], ["number"], ["string"]):
            f.kind = {"string": "text"}.get(types[0], types[0])
        elif types == ["array"] and _types(sub.get("items") or {})[0] in (["integer"], ["number"], ["string"]):
            f.kind = "list"
        f.value = _display(current, f.kind)
        fields.append(f)
    return fields


def leaves(fields: list[Field]) -> list[Field]:
    return [leaf for f in fields for leaf in f.leaves()]


def parse(schema: dict[str, Any], post, fields: list[Field]) -> tuple[dict[str, Any], dict[str, str]]:
    """Form values → params (empty fields left out, so that the schema's defaults apply) and the fields
    whose text is not even the right kind of value (e.g. letters in a number)."""
    params: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for f in leaves(fields):
        raw = post.get(f.name, "")
        f.value = raw if f.kind != "boolean" else ""
        f.checked = f.kind == "boolean" and post.get(f.name) is not None
        try:
            value = _convert(f, raw, _schema_at(schema, f.path))
        except ValueError as exc:
            errors[f.path] = str(exc)
            continue
        if value is not _OMIT:
            _put(params, f.path, value)
    return params, errors


_OMIT = object()


def _convert(f: Field, raw: str, sub: dict[str, Any]) -> Any:
    text = raw.strip()
    if f.kind == "boolean":
        return f.checked
    if text == "":
        return _OMIT
    if f.kind == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError("must be a whole number") from None
    if f.kind == "number":
        try:
            return float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError:
            raise ValueError("must be a number") from None
    if f.kind == "select":
        for value, _ in f.choices:
            if value == text:
                return json.loads(value)
        raise ValueError("choose one of the options")
    if f.kind == "list":
        item_type = _types(sub.get("items") or {})[0][0]
        items = [t.strip() for t in re.split(r"[,\s]+", text.strip("[] ")) if t.strip()]
        conv = {"integer": int, "number": float, "string": str}[item_type]
        try:
            return [conv(t) for t in items]
        except ValueError:
            raise ValueError(f"a list of {item_type}s separated by commas") from None
    if f.kind == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            if "string" in _types(sub)[0]:
                return text
            raise ValueError("must be JSON (e.g. [1, 2] or {\"low\": 10})") from None
    return text


def _schema_at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    for part in path.split("."):
        schema = (schema.get("properties") or {}).get(part, {})
    return schema


def _put(params: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        params = params.setdefault(part, {})
    params[parts[-1]] = value


def attach_errors(fields: list[Field], errors: dict[str, str]) -> dict[str, str]:
    """Put each error on the deepest field its path names (`frame_size.0` → `frame_size`); returns the
    errors that name no field (shown above the form)."""
    by_path = {f.path: f for f in leaves(fields)}
    left = {}
    for path, message in errors.items():
        parts = path.split(".")
        for n in range(len(parts), 0, -1):
            target = by_path.get(".".join(parts[:n]))
            if target is not None:
                target.error = message
                break
        else:
            left[path] = message
    return left
