"""The new-job form, generated from an entrypoint's JSON Schema: one field per property (nested objects as
fieldsets), defaults as initial values, units from the title's parenthesis, the description as help text.

Structured values get structured inputs, never a JSON box where the schema says more:
* a fixed-length array of numbers (`frame_size: [H, W]`, `photons: [min, max]`) is one number input per
  item (`tuple`), labelled from the title (`H W`, `x y`, `row, col`, `low, high`; otherwise min / max);
* `oneOf` / `anyOf` (a camera preset *or* custom settings) is a select (`choice`) whose entries are the
  alternatives' constants, plus one sub-form per object alternative (shown when chosen); an alternative
  the form cannot draw (an object without properties) is a JSON entry, so nothing the API takes is lost;
* an array of fixed-length number arrays (per-channel shifts) is a choice between its default and rows.

Only the translation between HTML form values and JSON lives here. Whether the values are *valid* is the
registry's call (`services.submit` → JSON Schema); its error is shown at the field it names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import jsonschema

PREFIX = "p."
_UNIT = re.compile(r"^(?P<label>.*?)\s*\((?P<unit>[^():,]{1,16})\)\s*$")
# Axis words in a fixed-length array's title → its inputs' labels and how its default reads.
_AXES: list[tuple[re.Pattern[str], list[str], str]] = [
    (re.compile(r"\[?\bH,? W\b\]?"), ["H", "W"], " × "),
    (re.compile(r"\[?\bx,? y,? z\b\]?"), ["x", "y", "z"], ", "),
    (re.compile(r"\[?\bx,? y\b\]?"), ["x", "y"], ", "),
    (re.compile(r"\[?\brow,? col\b\]?"), ["row", "col"], ", "),
    (re.compile(r"\[?\blow,? high\b\]?"), ["min", "max"], " – "),
]
MAX_TUPLE = 4  # longer fixed-length arrays stay a comma-separated list
MAX_ROWS = 8  # arrays of tuples with more rows than this (e.g. positions) stay JSON
DEFAULT_ROWS = 4


@dataclass
class Part:
    """One number input of a fixed-length array field (`frame_size` → H and W)."""

    label: str
    name: str
    dom_id: str
    value: str = ""


@dataclass
class Option:
    """One entry of a choice field's select: a constant (`token` is its JSON), or a sub-form shown when
    chosen (`token` is "form:N", N the alternative's index)."""

    token: str
    label: str
    kind: str = "const"  # const | object | rows | json
    children: list[Field] = field(default_factory=list)
    consts: dict[str, Any] = field(default_factory=dict)  # an object alternative's fixed keys (`dist: normal`)
    schema: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class Field:
    path: str  # dotted, e.g. "roi.x0"
    kind: str  # integer | number | boolean | select | text | list | tuple | choice | json | object
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
    schema: dict[str, Any] = field(default_factory=dict, repr=False)
    name_path: str = ""  # the input's name when it differs from `path` (inside a choice's sub-form)
    item_kind: str = ""  # tuple: integer | number
    parts: list[Part] = field(default_factory=list)  # tuple: one per item
    joiner: str = ", "  # tuple: how its default reads ("32 × 32", "1000 – 5000")
    options: list[Option] = field(default_factory=list)  # choice

    @property
    def name(self) -> str:
        return PREFIX + (self.name_path or self.path)

    @property
    def key(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def dom_id(self) -> str:
        return "param-" + re.sub(r"[.~]", "-", self.name_path or self.path)

    @property
    def step(self) -> str:
        return "1" if "integer" in (self.kind, self.item_kind) else "any"

    @property
    def bounds(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"{_num(self.minimum)} – {_num(self.maximum)}"
        if self.minimum is not None:
            return f"≥ {_num(self.minimum)}"
        if self.maximum is not None:
            return f"≤ {_num(self.maximum)}"
        return ""

    @property
    def help_text(self) -> str:
        """The line under the input: the description, the bounds, the default."""
        default = f"default {self.default_text}" if self.has_default and self.kind != "boolean" else ""
        return " · ".join(part for part in (self.help, self.bounds, default) if part)

    @property
    def default_text(self) -> str:
        """The schema's default as a person reads it (never Python's repr of a dict or list)."""
        return self.describe(self.default)

    def describe(self, value: Any) -> str:
        if value is None:
            return "automatic"
        if self.kind == "choice":
            option = _chosen(self.options, value)
            if option is None:
                return json.dumps(value)
            label = option.label.removesuffix("…")
            if option.kind == "object" and isinstance(value, dict):
                shown = [f"{c.label.lower()} {c.describe(value[c.key])}{' ' + c.unit if c.unit else ''}"
                         for c in option.children if c.key in value]
                return label + (f" ({', '.join(shown)})" if shown else "")
            if option.kind == "rows" and isinstance(value, list):
                return "; ".join(", ".join(_num(v) for v in row) for row in value)
            return label
        if self.kind == "tuple" and isinstance(value, list):
            return self.joiner.join(_num(v) for v in value)
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, list):
            return ", ".join(_num(v) if not isinstance(v, str | list | dict) else json.dumps(v)
                             for v in value) or "none"
        if isinstance(value, dict):
            return ", ".join(f"{k} {_num(v) if not isinstance(v, list | dict) else json.dumps(v)}"
                             for k, v in value.items()) or "none"
        return _num(value)

    def leaves(self) -> list[Field]:
        """The fields that carry a value or an error: a fieldset's children, a choice and its sub-forms."""
        if self.kind == "object":
            return [leaf for c in self.children for leaf in c.leaves()]
        if self.kind == "choice":  # the chosen sub-form's fields (another's may share their paths)
            return [self, *(leaf for o in self.options if o.token == self.value for c in o.children
                            for leaf in c.leaves())]
        return [self]


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


def _label_unit(title: str) -> tuple[str, str]:
    match = _UNIT.match(title)
    return (match["label"], match["unit"]) if match else (title, "")


def _fixed_numbers(schema: dict[str, Any]) -> int:
    """n when `schema` is an array of exactly n numbers (2 ≤ n ≤ MAX_TUPLE), else 0."""
    types, _ = _types(schema)
    n = schema.get("minItems")
    if (types == ["array"] and n == schema.get("maxItems") and isinstance(n, int) and 2 <= n <= MAX_TUPLE
            and _types(schema.get("items") or {})[0] in (["integer"], ["number"])):
        return n
    return 0


def _rows_of_tuples(schema: dict[str, Any]) -> int:
    """The row count to offer when `schema` is an array of fixed-length number arrays (per-channel shifts)."""
    types, _ = _types(schema)
    rows = schema.get("maxItems", DEFAULT_ROWS)
    if types == ["array"] and _fixed_numbers(schema.get("items") or {}) and isinstance(rows, int) \
            and 1 <= rows <= MAX_ROWS:
        return rows
    return 0


def _axes(title: str, n: int) -> tuple[str, list[str], str]:
    """(title without its axis words, one label per item, how the value reads)."""
    for pattern, labels, joiner in _AXES:
        if len(labels) == n and pattern.search(title):
            cleaned = pattern.sub("", title, count=1)
            cleaned = re.sub(r"\(\s*,\s*", "(", cleaned)
            cleaned = re.sub(r"\s*,\s*\)", ")", cleaned)
            cleaned = re.sub(r"\(\s*\)|\[\s*\]", "", cleaned)
            return re.sub(r"\s{2,}", " ", cleaned).strip(), labels, joiner
    if n == 2:
        return title, ["min", "max"], " – "
    return title, [str(i + 1) for i in range(n)], ", "


def _const_label(value: Any) -> str:
    if value is None:
        return "automatic"
    if value == []:
        return "none"
    return value if isinstance(value, str) else json.dumps(value)


def _fits(schema: dict[str, Any], value: Any) -> bool:
    try:
        return jsonschema.Draft202012Validator(schema).is_valid(value)
    except jsonschema.SchemaError:
        return False


def _chosen(options: list[Option], value: Any) -> Option | None:
    """The option that shows `value`: its constant, else the first sub-form whose schema it fits."""
    token = json.dumps(value)
    for o in options:
        if o.kind == "const" and o.token == token:
            return o
    for o in options:
        # A sub-form shows only its own keys: a value with others (allowed by a looser alternative) would
        # lose them on the way back, so it goes to the JSON entry instead.
        foreign = o.kind == "object" and isinstance(value, dict) and not set(value) <= set(o.schema["properties"])
        if o.kind in ("object", "rows") and not foreign and _fits(o.schema, value):
            return o
    return next((o for o in options if o.kind == "json"), None)


def build(schema: dict[str, Any], values: dict[str, Any] | None = None, prefix: str = "",
          name_prefix: str | None = None) -> list[Field]:
    """Fields for the properties of an object schema; `values` (e.g. a cloned job's params) fill them."""
    values = values or {}
    name_prefix = prefix if name_prefix is None else name_prefix
    fields = []
    for name, sub in (schema.get("properties") or {}).items():
        if "const" in sub:
            continue  # an alternative's fixed key: the choice it belongs to sets it
        fields.append(_field(f"{prefix}{name}", f"{name_prefix}{name}", sub, values.get(name, sub.get("default"))))
    return fields


def _field(path: str, name_path: str, sub: dict[str, Any], current: Any) -> Field:
    title = sub.get("title") or path.rsplit(".", 1)[-1].replace("_", " ").capitalize()
    types, nullable = _types(sub)
    f = Field(path=path, kind="json", label=title, help=sub.get("description", ""),
              default=sub.get("default"), has_default="default" in sub,
              minimum=sub.get("minimum", sub.get("exclusiveMinimum")),
              maximum=sub.get("maximum", sub.get("exclusiveMaximum")), schema=sub,
              name_path=name_path if name_path != path else "")
    alternatives = sub.get("oneOf") or sub.get("anyOf")
    if "enum" in sub:
        f.kind = "select"
        f.choices = [(json.dumps(v), "default" if v is None else str(v)) for v in sub["enum"]]
        if not f.has_default:  # leaving it unset is a choice too (a sub-form's optional setting)
            f.choices.insert(0, ("", "—"))
    elif alternatives:
        f.kind = "choice"
        f.options = _options(path, name_path, alternatives, current)
    elif types == ["object"] and sub.get("properties"):
        f.kind = "object"
        f.children = build(sub, current if isinstance(current, dict) else {}, prefix=path + ".",
                           name_prefix=name_path + ".")
    elif types == ["boolean"]:
        f.kind = "boolean"
        f.checked = bool(current)
    elif types in (["integer"], ["number"], ["string"]):
        f.kind = {"string": "text"}.get(types[0], types[0])
    elif n := _fixed_numbers(sub):
        _make_tuple(f, sub, n, current)
    elif rows := _rows_of_tuples(sub):
        f.kind = "choice"
        constants: list[dict[str, Any]] = [{"const": f.default}] if f.has_default else []
        if nullable and f.default is not None:
            constants.append({"type": "null"})
        f.options = _options(path, name_path, [*constants, sub], current, rows=rows, row_title=title)
        f.label = _axes(title, _fixed_numbers(sub["items"]))[0]
    elif types == ["array"] and _types(sub.get("items") or {})[0] in (["integer"], ["number"], ["string"]):
        f.kind = "list"
    if f.kind != "tuple":
        f.label, f.unit = _label_unit(f.label)
    if f.kind == "choice":
        f.choices = [(o.token, o.label) for o in f.options]
        unset = current is None and not any(o.token == "null" for o in f.options)
        chosen = None if unset else _chosen(f.options, current)
        f.value = chosen.token if chosen else ""
        if chosen is None:  # left to the schema's default (or to the program)
            f.choices.insert(0, ("", "—"))
        if chosen and chosen.kind == "json":
            chosen.children[0].value = json.dumps(current)
    elif f.kind != "tuple":
        f.value = _display(current, f.kind)
    return f


def _make_tuple(f: Field, sub: dict[str, Any], n: int, current: Any) -> None:
    items = sub.get("items") or {}
    f.kind, f.item_kind = "tuple", _types(items)[0][0]
    title, labels, f.joiner = _axes(f.label, n)
    f.label, f.unit = _label_unit(title)
    f.minimum = items.get("minimum", items.get("exclusiveMinimum"))
    f.maximum = items.get("maximum", items.get("exclusiveMaximum"))
    values = current if isinstance(current, list) and len(current) == n else [None] * n
    f.parts = [Part(label=label, name=f"{f.name}.{i}", dom_id=f"{f.dom_id}-{i}",
                    value="" if v is None else _num(v)) for i, (label, v) in enumerate(zip(labels, values, strict=True))]


def _options(path: str, name_path: str, alternatives: list[dict[str, Any]], current: Any, rows: int = 0,
             row_title: str = "") -> list[Option]:
    options: list[Option] = []
    for i, alt in enumerate(alternatives):
        types, _ = _types(alt)
        sub_name = f"{name_path}~{i}"
        if "enum" in alt or "const" in alt:
            options += [Option(json.dumps(v), _const_label(v)) for v in alt.get("enum", [alt.get("const")])]
        elif alt.get("type") == "null":
            options.append(Option("null", "automatic"))
        elif types == ["object"] and alt.get("properties"):
            consts = {k: s["const"] for k, s in alt["properties"].items() if isinstance(s, dict) and "const" in s}
            label = alt.get("title") or " ".join(str(v) for v in consts.values()) or "custom…"
            mine = isinstance(current, dict) and set(current) <= set(alt["properties"]) and _fits(alt, current)
            options.append(Option(f"form:{i}", label, "object", schema=alt, consts=consts, children=build(
                alt, current if mine else {}, prefix=path + ".", name_prefix=sub_name + ".")))
        elif rows and _rows_of_tuples(alt):
            n = _fixed_numbers(alt["items"])
            mine = isinstance(current, list) and _fits(alt, current)
            per_channel = "channel" in row_title.lower()
            children = []
            for r in range(rows):
                row = Field(path=f"{path}.{r}", kind="tuple", label=f"channel {r}" if per_channel else f"row {r + 1}",
                            name_path=f"{sub_name}.{r}", schema=alt["items"])
                _make_tuple(row, alt["items"], n, current[r] if mine and r < len(current) else None)
                _, labels, row.joiner = _axes(row_title, n)  # the axis words are in the array's title
                for part, label in zip(row.parts, labels, strict=True):
                    part.label = label
                _, row.unit = _label_unit(_axes(row_title, n)[0])
                children.append(row)
            options.append(Option(f"form:{i}", "per channel…" if per_channel else "rows…", "rows", children, schema=alt))
        else:  # what the form cannot draw: JSON, so that the API's whole range stays reachable
            child = Field(path=path, name_path=sub_name, kind="json", label="JSON", schema=alt,
                          help="A JSON value, e.g. {\"key\": 1}")
            options.append(Option(f"form:{i}", alt.get("title") or "other (JSON)…", "json", [child], schema=alt))
    return options


def leaves(fields: list[Field]) -> list[Field]:
    return [leaf for f in fields for leaf in f.leaves()]


_OMIT = object()  # left empty: the schema's default applies
_BAD = object()  # not even the right kind of value: the error is recorded at the field


def parse(schema: dict[str, Any], post, fields: list[Field]) -> tuple[dict[str, Any], dict[str, str]]:
    """Form values → params (empty fields left out, so that the schema's defaults apply) and the fields
    whose text is not even the right kind of value (e.g. letters in a number), by field path."""
    params: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for f in fields:
        value = _parse_field(f, post, errors)
        if value is not _OMIT and value is not _BAD:
            params[f.key] = value
    return params, errors


def _parse_field(f: Field, post, errors: dict[str, str]) -> Any:
    if f.kind == "object":
        return _parse_object(f.children, {}, post, errors)
    try:
        if f.kind == "tuple":
            return _parse_tuple(f, post)
        if f.kind == "choice":
            return _parse_choice(f, post, errors)
        raw = post.get(f.name, "")
        f.value = raw if f.kind != "boolean" else ""
        f.checked = f.kind == "boolean" and post.get(f.name) is not None
        return _convert(f, raw)
    except ValueError as exc:
        errors[f.path] = str(exc)
        return _BAD


def _parse_object(children: list[Field], fixed: dict[str, Any], post, errors: dict[str, str]) -> Any:
    obj = dict(fixed)
    bad = False
    for c in children:
        value = _parse_field(c, post, errors)
        bad |= value is _BAD
        if value is not _OMIT and value is not _BAD:
            obj[c.key] = value
    return _BAD if bad else obj if obj else _OMIT


def _parse_tuple(f: Field, post) -> Any:
    raws = [post.get(p.name, "").strip() for p in f.parts]
    for part, raw in zip(f.parts, raws, strict=True):
        part.value = raw
    if not any(raws):
        return _OMIT
    if not all(raws):
        missing = " and ".join(p.label for p, raw in zip(f.parts, raws, strict=True) if not raw)
        raise ValueError(f"give {missing} too, or leave all empty for the default")
    try:
        return [int(t) if f.item_kind == "integer" else _number(t) for t in raws]
    except ValueError:
        raise ValueError("must be whole numbers" if f.item_kind == "integer" else "must be numbers") from None


def _parse_choice(f: Field, post, errors: dict[str, str]) -> Any:
    token = post.get(f.name, "").strip()
    f.value = token
    if token == "":
        return _OMIT
    option = next((o for o in f.options if o.token == token), None)
    if option is None:
        raise ValueError("choose one of the options")
    if option.kind == "const":
        return json.loads(token)
    if option.kind == "object":
        value = _parse_object(option.children, option.consts, post, errors)
        return {} if value is _OMIT else value
    if option.kind == "json":
        child = option.children[0]
        child.value = post.get(child.name, "")
        if not child.value.strip():
            raise ValueError("give the JSON value, or choose another option")
        try:
            return json.loads(child.value)
        except json.JSONDecodeError:
            raise ValueError("must be JSON (e.g. {\"low\": 10})") from None
    rows = [_parse_field(c, post, errors) for c in option.children]
    while rows and rows[-1] is _OMIT:
        rows.pop()
    if _BAD in rows:
        return _BAD
    if not rows:
        raise ValueError(f"fill in {option.children[0].label}, or choose another option")
    if _OMIT in rows:
        raise ValueError(f"{option.children[rows.index(_OMIT)].label} is empty: fill it in or clear the rows after it")
    return rows


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def _convert(f: Field, raw: str) -> Any:
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
            return _number(text)
        except ValueError:
            raise ValueError("must be a number") from None
    if f.kind == "select":
        for value, _ in f.choices:
            if value == text:
                return json.loads(value)
        raise ValueError("choose one of the options")
    if f.kind == "list":
        item_type = _types(f.schema.get("items") or {})[0][0]
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
            if "string" in _types(f.schema)[0]:
                return text
            raise ValueError("must be JSON (e.g. [1, 2] or {\"low\": 10})") from None
    return text


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
