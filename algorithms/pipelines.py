"""Pipelines (design §9): a small DAG of registry entrypoints, wired output → input by file name.

Declared in `pipelines.yaml` beside the registry and loaded into it as application `pipeline`, so that every
place that lists, describes or validates an entrypoint (the applications API, the new-job form, submission)
sees a pipeline as one more entrypoint: its inputs are the pipeline's own slots, its parameters an object
with one member per step (each the step entrypoint's own schema, defaults filled in).

A step's input slot is wired to a list of sources:

- `input:<slot>` — the files the user gave for one of the pipeline's slots;
- `<step>:<pattern>` — the outputs of an earlier step whose path below its output folder matches the
  glob `<pattern>` (`fit:locs.h5`, `drift:*_undrifted.h5`).

A step may only name steps declared before it, so the graph has no cycles by construction. The loader
refuses, naming the key: unknown entrypoints or slots, wires to later or unknown steps, a required slot left
unwired, a suffix no file of the source could have, step parameters the step's schema refuses.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

APPLICATION = "pipeline"
VERSION = "1.0"
INPUT = "input"
QUEUE = "pipeline"  # a pipeline's own job is "queued" here: never a worker's queue, so it runs nowhere
_STEP_KEYS = {"run", "inputs", "params", "summary"}
_PIPELINE_KEYS = {"summary", "description", "inputs", "steps"}


@dataclass(frozen=True)
class Source:
    """Where a step's input files come from: a pipeline input slot, or an earlier step's outputs."""

    step: str  # INPUT for the pipeline's own inputs
    pattern: str  # the slot name for INPUT, else a glob over output paths

    def __str__(self) -> str:
        return f"{self.step}:{self.pattern}"

    def matches(self, output_path: str) -> bool:
        return fnmatch.fnmatchcase(output_path, self.pattern)


@dataclass(frozen=True)
class Step:
    name: str
    application: str
    version: str
    entrypoint: str
    summary: str
    inputs: dict[str, tuple[Source, ...]]
    params: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.application}/{self.version}/{self.entrypoint}"

    @property
    def needs(self) -> tuple[str, ...]:
        """The earlier steps whose outputs this one takes."""
        return tuple(dict.fromkeys(s.step for sources in self.inputs.values() for s in sources if s.step != INPUT))


def plan(entry: Any) -> dict[str, Any]:
    """What a pipeline job's frozen spec records of its steps, so later registry edits do not change it."""
    return {"steps": [{"name": s.name, "application": s.application, "version": s.version,
                       "entrypoint": s.entrypoint, "summary": s.summary, "needs": list(s.needs),
                       "inputs": {slot: [str(src) for src in sources] for slot, sources in s.inputs.items()}}
                      for s in entry.steps],
            "reused": {}}


def load(path: Path, registry: Any) -> dict[str, Any]:
    """The pipelines of `path` as registry Entrypoints (application `pipeline`); {} when the file is absent."""
    from algorithms.registry import Entrypoint, RegistryError

    if not path.exists():
        return {}
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise RegistryError(f"{path}: expected a map of pipelines")
    loader = _Loader(path, registry)
    entries = {}
    for name, spec in raw.items():
        steps, inputs = loader.pipeline(str(name), spec)
        schema = {"type": "object", "additionalProperties": False, "default": {},
                  "properties": {s.name: _step_schema(registry.get(s.application, s.version, s.entrypoint), s)
                                 for s in steps}}
        entries[str(name)] = Entrypoint(
            application=APPLICATION, version=VERSION, name=str(name), summary=str(spec["summary"]),
            description=str(spec.get("description", "")), command=(), inputs=inputs, params_schema=schema,
            outputs=(), hardware={"gpu": 0, "gpu_memory_gb": 0, "cpu": 0, "memory_gb": 0},
            timeout_s=max(registry.get(s.application, s.version, s.entrypoint).timeout_s for s in steps),
            max_attempts=1, steps=tuple(steps),
        )
    return entries


def _step_schema(entry: Any, step: Step) -> dict[str, Any]:
    """The step entrypoint's schema with the pipeline's own settings of it as defaults."""
    schema = copy.deepcopy(entry.params_schema)
    schema["title"] = f"{step.name}: {entry.summary}"
    schema["default"] = {}
    for key, value in step.params.items():
        schema.setdefault("properties", {}).setdefault(key, {})["default"] = value
    return schema


class _Loader:
    def __init__(self, path: Path, registry: Any):
        self.path, self.registry = path, registry

    def fail(self, where: str, problem: str) -> Exception:
        from algorithms.registry import RegistryError

        return RegistryError(f"{self.path}: {where}: {problem}")

    def pipeline(self, name: str, spec: Any) -> tuple[list[Step], dict[str, Any]]:
        from algorithms.registry import _NAME_RE, _Loader

        if not _NAME_RE.match(name):
            raise self.fail(name, "a pipeline name is lower-case letters, digits, '-' and '_'")
        if not isinstance(spec, dict):
            raise self.fail(name, "expected a map with summary, inputs and steps")
        unknown = set(spec) - _PIPELINE_KEYS
        if unknown:
            raise self.fail(name, f"unknown key(s) {', '.join(sorted(unknown))}")
        for key in ("summary", "steps"):
            if key not in spec:
                raise self.fail(name, f"missing key {key!r}")
        inputs = _Loader(self.path)._inputs([name, "inputs"], spec.get("inputs") or {})
        if not isinstance(spec["steps"], dict) or not spec["steps"]:
            raise self.fail(f"{name}.steps", "expected a map of at least one step")
        steps: list[Step] = []
        for step_name, step_spec in spec["steps"].items():
            steps.append(self.step(f"{name}.steps.{step_name}", str(step_name), step_spec, inputs, steps))
        return steps, inputs

    def step(self, where: str, name: str, spec: Any, inputs: dict[str, Any], earlier: list[Step]) -> Step:
        from algorithms.registry import _NAME_RE, ParamsError, UnknownEntrypoint

        if not _NAME_RE.match(name) or name == INPUT:
            raise self.fail(where, f"a step name is lower-case letters, digits, '-' and '_', not {INPUT!r}")
        if not isinstance(spec, dict) or "run" not in spec:
            raise self.fail(where, "expected a map with `run: application/entrypoint[@version]`")
        unknown = set(spec) - _STEP_KEYS
        if unknown:
            raise self.fail(where, f"unknown key(s) {', '.join(sorted(unknown))}")
        target, _, version = str(spec["run"]).partition("@")
        application, _, entrypoint = target.partition("/")
        try:
            entry = self.registry.get(application, version or None, entrypoint)
        except UnknownEntrypoint as exc:
            raise self.fail(f"{where}.run", exc.message) from None
        params = spec.get("params") or {}
        try:
            entry.resolve_params(params)
        except ParamsError as exc:
            raise self.fail(f"{where}.params", str(exc)) from None
        wired = self.wires(where, spec.get("inputs") or {}, entry, inputs, {s.name: s for s in earlier})
        return Step(name=name, application=entry.application, version=entry.version, entrypoint=entry.name,
                    summary=str(spec.get("summary") or entry.summary), inputs=wired, params=dict(params))

    def wires(self, where: str, raw: Any, entry: Any, inputs: dict[str, Any],
              earlier: dict[str, Step]) -> dict[str, tuple[Source, ...]]:
        if not isinstance(raw, dict):
            raise self.fail(f"{where}.inputs", "expected a map of slot → source(s)")
        wired = {}
        for slot, value in raw.items():
            if slot not in entry.inputs:
                raise self.fail(f"{where}.inputs.{slot}", f"{entry.key} has no input slot {slot!r}")
            sources = []
            for text in value if isinstance(value, list) else [value]:
                step, sep, pattern = str(text).partition(":")
                if not sep or not pattern:
                    raise self.fail(f"{where}.inputs.{slot}", f"{text!r}: expected `input:<slot>` or `<step>:<file>`")
                if step == INPUT and pattern not in inputs:
                    raise self.fail(f"{where}.inputs.{slot}", f"the pipeline has no input slot {pattern!r}")
                if step != INPUT and step not in earlier:
                    raise self.fail(f"{where}.inputs.{slot}", f"{step!r} is not a step declared before this one")
                suffixes = entry.inputs[slot].suffixes
                if step != INPUT and suffixes and not any(pattern.endswith(s) for s in suffixes):
                    raise self.fail(f"{where}.inputs.{slot}", f"{pattern!r} must end with {' or '.join(suffixes)}")
                sources.append(Source(step, pattern))
            wired[slot] = tuple(sources)
        missing = [s.name for s in entry.inputs.values() if s.min_count and s.name not in wired]
        if missing:
            raise self.fail(f"{where}.inputs", f"required slot {missing[0]!r} of {entry.key} is not wired")
        return wired
