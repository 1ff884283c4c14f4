"""The simulate entrypoint's JSON Schema names exactly the SimulationConfig fields, with the same defaults."""

from __future__ import annotations

import json
from dataclasses import MISSING, fields
from pathlib import Path

from algorithms.simulation.render import SimulationConfig

SCHEMA = Path(__file__).resolve().parents[2] / "algorithms" / "schemas" / "simulation_simulate.json"


def test_schema_properties_are_the_config_fields_with_the_same_defaults():
    props = json.loads(SCHEMA.read_text())["properties"]
    cfg = SimulationConfig()
    assert set(props) == {f.name for f in fields(SimulationConfig)}
    for f in fields(SimulationConfig):
        default = getattr(cfg, f.name)
        if f.default is MISSING and f.default_factory is MISSING:
            continue
        expected = list(default) if isinstance(default, tuple) else default
        assert props[f.name]["default"] == expected, f.name
