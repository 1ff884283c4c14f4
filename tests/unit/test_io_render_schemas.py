"""The params schemas of io/convert and render/* agree with the CLIs' defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from algorithms.io.convert import DEFAULTS as CONVERT_DEFAULTS
from algorithms.io.formats import FORMATS
from algorithms.registry import ParamsError, resolve_params
from algorithms.render.cli import FRC_DEFAULTS, RENDER_DEFAULTS

SCHEMAS = Path(__file__).resolve().parents[2] / "algorithms/schemas"


@pytest.mark.parametrize("name,defaults", [("io_convert", CONVERT_DEFAULTS), ("render_render", RENDER_DEFAULTS),
                                           ("render_frc", FRC_DEFAULTS)])
def test_schema_defaults_match_cli_defaults(name, defaults):
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    assert resolve_params(schema, {}) == defaults


def test_convert_schema_lists_every_format_and_rejects_unknown():
    schema = json.loads((SCHEMAS / "io_convert.json").read_text())
    assert tuple(schema["properties"]["to"]["enum"]) == FORMATS
    with pytest.raises(ParamsError):
        resolve_params(schema, {"to": "excel"})
    with pytest.raises(ParamsError):
        resolve_params(json.loads((SCHEMAS / "render_render.json").read_text()), {"pixel_nm": 0})
