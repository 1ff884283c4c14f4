"""Load and validate `registry.yaml`: application → version → entrypoint (design §5).

Data only, no Django: the portal, the worker and the tests all read the registry through this module.
Every error names the file, the key path inside it and the problem, so a typo is found at start-up.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import jsonschema
import yaml

DEFAULT_PATH = Path(__file__).with_name("registry.yaml")
GPU_TIERS_GB = (8, 16, 24, 40, 80)

_VERSION_RE = re.compile(r"^\d+\.\d+(\.\d+)?$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_ENTRY_KEYS = {
    "summary", "description", "command", "inputs", "params", "outputs", "hardware", "timeout_s", "max_attempts",
    "retry_on_algorithm_failure", "cpu_route",
}
_REQUIRED_KEYS = {"summary", "command", "inputs", "params", "outputs", "hardware", "timeout_s", "max_attempts"}
_HARDWARE_KEYS = {"gpu", "gpu_memory_gb", "cpu", "memory_gb"}
_CPU_ROUTE_KEYS = {"cpu", "memory_gb", "timeout_s", "slowdown"}
_CPU_ROUTE_REQUIRED = {"cpu", "memory_gb", "timeout_s"}
DEVICE_PARAM = "device"  # the params field whose value "cpu" chooses an entrypoint's CPU route


class RegistryError(ValueError):
    """The registry file is malformed; the message names file, key path and problem."""


class ParamsError(ValueError):
    """User params violate the entrypoint's schema. `path` is the dotted field path."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path or '(params)'}: {message}")
        self.path = path
        self.message = message


class UnknownEntrypoint(LookupError):
    """No such application, version or entrypoint. `field` says which of the three is unknown."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class InputSlot:
    name: str
    suffixes: tuple[str, ...]
    min_count: int
    max_count: int | None  # None: unbounded

    def describe_count(self) -> str:
        if self.max_count is None:
            return f"at least {self.min_count}"
        if self.min_count == self.max_count:
            return f"exactly {self.min_count}"
        return f"{self.min_count} to {self.max_count}"


@dataclass(frozen=True)
class CpuRoute:
    """A GPU entrypoint that can also run on a CPU: the hardware and time limit it gets there.

    `slowdown` (optional) is how many times longer the same job takes on that CPU than on a GPU, as measured
    (the registry comment says where); the portal shows it, and never guesses one."""

    hardware: dict[str, int]
    timeout_s: int
    slowdown: float | None = None

    def describe(self) -> str:
        """For the form and the waiting reason, e.g. 'about 30× slower than on a GPU, time limit 24 h'."""
        hours = self.timeout_s / 3600
        limit = f"{hours:g} h" if hours >= 1 else f"{self.timeout_s} s"
        slower = f"about {self.slowdown:g}× slower than on a GPU, " if self.slowdown else ""
        return f"{slower}time limit {limit}"


@dataclass(frozen=True)
class Entrypoint:
    application: str
    version: str
    name: str
    summary: str
    description: str
    command: tuple[str, ...]
    inputs: dict[str, InputSlot]
    params_schema: dict[str, Any]
    outputs: tuple[str, ...]
    hardware: dict[str, int]
    timeout_s: int
    max_attempts: int
    retry_on_algorithm_failure: bool = False
    cpu_route: CpuRoute | None = None  # it can also run on a CPU, with this hardware and time limit
    # A pipeline (application `pipeline`, algorithms/pipelines.py): its steps in order; empty for a program.
    steps: tuple[Any, ...] = ()

    @property
    def is_pipeline(self) -> bool:
        return bool(self.steps)

    @property
    def key(self) -> str:
        return f"{self.application}/{self.version}/{self.name}"

    @property
    def queue(self) -> str:
        """The smallest hardware tier that covers this entrypoint (design §4)."""
        return queue_for(self.hardware)

    @cached_property
    def params_validator(self) -> jsonschema.protocols.Validator:
        """The params schema compiled once per entrypoint (every submission validates against it)."""
        return jsonschema.Draft202012Validator(self.params_schema)

    def resolve_params(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """Validate `params` against the schema and return a copy with defaults filled in."""
        return resolve_params(self.params_schema, params or {}, validator=self.params_validator)

    def runs_on_cpu(self, resolved: dict[str, Any], auto_to_cpu: bool = False) -> bool:
        """Whether a job with these resolved params takes the CPU route: the user chose Device = cpu, or left
        it automatic (null) while the deployment sends automatic jobs to the CPU (`auto_to_cpu`)."""
        if self.cpu_route is None:
            return False
        device = resolved.get(DEVICE_PARAM)
        return device == "cpu" or (device is None and auto_to_cpu)


@dataclass
class Registry:
    path: Path
    applications: dict[str, dict[str, dict[str, Entrypoint]]] = field(default_factory=dict)
    default_versions: dict[str, str] = field(default_factory=dict)

    def get(self, application: str, version: str | None, entrypoint: str) -> Entrypoint:
        """Look an entrypoint up; raises UnknownEntrypoint naming what is unknown."""
        versions = self.applications.get(application)
        if versions is None:
            raise UnknownEntrypoint("application", f"unknown application {application!r}")
        version = version or self.default_versions[application]
        entries = versions.get(version)
        if entries is None:
            raise UnknownEntrypoint("version", f"unknown version {version!r} of {application!r}")
        entry = entries.get(entrypoint)
        if entry is None:
            raise UnknownEntrypoint("entrypoint", f"unknown entrypoint {entrypoint!r} in {application} {version}")
        return entry

    def entrypoints(self) -> list[Entrypoint]:
        return [e for versions in self.applications.values() for v in versions.values() for e in v.values()]

    @property
    def longest_timeout_s(self) -> int:
        # A CPU route's limit counts too: the broker's visibility timeout must outlast every running job.
        return max((max(e.timeout_s, e.cpu_route.timeout_s if e.cpu_route else 0) for e in self.entrypoints()),
                   default=0)


def queue_for(hardware: dict[str, int]) -> str:
    """`cpu` for CPU jobs; otherwise the smallest `gpu.<GB>` tier with at least the memory asked for."""
    if not hardware.get("gpu"):
        return "cpu"
    need = hardware.get("gpu_memory_gb", 0)
    for tier in GPU_TIERS_GB:
        if need <= tier:
            return f"gpu.{tier}"
    raise ValueError(f"no GPU tier has {need} GB (largest is {GPU_TIERS_GB[-1]} GB)")


def number(value: Any) -> float:
    """A capability as a finite non-negative number; anything else (a string, NaN, a list) counts as 0.

    Capabilities come from workers: the worker API checks them, but a row stored before it did must still
    route jobs instead of raising in every submission and every sweep.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    value = float(value)
    return value if math.isfinite(value) and value > 0 else 0.0


def gpu_memories(capabilities: dict[str, Any]) -> list[float]:
    """The memory (GB) of each GPU a worker registered, malformed entries counting as 0 GB."""
    gpus = capabilities.get("gpus") if isinstance(capabilities, dict) else None
    if not isinstance(gpus, list):
        return []
    return [number(g.get("memory_gb")) if isinstance(g, dict) else 0.0 for g in gpus]


def queues_for_capabilities(capabilities: dict[str, Any]) -> list[str]:
    """Every job queue a worker with these capabilities can serve: `cpu`, and each GPU tier its card covers."""
    queues = ["cpu"]
    memories = gpu_memories(capabilities)
    if memories:
        queues += [f"gpu.{tier}" for tier in GPU_TIERS_GB if tier <= max(memories) + 0.5]
    return queues


def covers(capabilities: dict[str, Any], hardware: dict[str, int]) -> bool:
    """Whether a worker with `capabilities` can run a job needing `hardware`."""
    caps = capabilities if isinstance(capabilities, dict) else {}
    if hardware.get("gpu"):
        memories = gpu_memories(caps)
        if len(memories) < hardware["gpu"]:
            return False
        if max(memories) + 0.5 < hardware.get("gpu_memory_gb", 0):
            return False
    if number(caps.get("cpu_count")) < hardware.get("cpu", 0):
        return False
    return number(caps.get("memory_gb")) + 0.5 >= hardware.get("memory_gb", 0)


class _Loader:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, keys: list[str], problem: str) -> RegistryError:
        where = ".".join(keys) if keys else "(top level)"
        return RegistryError(f"{self.path}: {where}: {problem}")

    def load(self) -> Registry:
        try:
            raw = yaml.safe_load(self.path.read_text())
        except FileNotFoundError:
            raise RegistryError(f"{self.path}: file not found") from None
        except yaml.YAMLError as exc:
            raise RegistryError(f"{self.path}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict) or not raw:
            raise self.fail([], "expected a map of applications")
        registry = Registry(path=self.path)
        for app, versions in raw.items():
            self._check_name([app], app)
            if not isinstance(versions, dict) or not versions:
                raise self.fail([app], "expected a map of versions")
            registry.applications[app] = {}
            defaults = []
            for version, entries in versions.items():
                keys = [app, str(version)]
                if not isinstance(version, str) or not _VERSION_RE.match(version):
                    raise self.fail(keys, 'version must be a quoted string like "1.0" or "1.2.3"')
                if not isinstance(entries, dict):
                    raise self.fail(keys, "expected a map of entrypoints")
                entries = dict(entries)
                is_default = entries.pop("default", False)
                if not isinstance(is_default, bool):
                    raise self.fail([*keys, "default"], "must be true or false")
                if is_default:
                    defaults.append(version)
                if not entries:
                    raise self.fail(keys, "has no entrypoints")
                registry.applications[app][version] = {
                    name: self._entry([*keys, name], app, version, name, spec) for name, spec in entries.items()
                }
            if len(defaults) > 1:
                raise self.fail([app], f"more than one version is marked default: {', '.join(defaults)}")
            registry.default_versions[app] = defaults[0] if defaults else max(versions, key=_version_tuple)
        return registry

    def _check_name(self, keys: list[str], name: Any) -> None:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise self.fail(keys, "names are lower-case letters, digits, '-' and '_', starting with a letter")

    def _entry(self, keys: list[str], app: str, version: str, name: str, spec: Any) -> Entrypoint:
        self._check_name(keys, name)
        if not isinstance(spec, dict):
            raise self.fail(keys, "expected a map with summary, command, inputs, params, ...")
        unknown = set(spec) - _ENTRY_KEYS
        if unknown:
            raise self.fail([*keys, sorted(unknown)[0]], f"unknown key (allowed: {', '.join(sorted(_ENTRY_KEYS))})")
        missing = _REQUIRED_KEYS - set(spec)
        if missing:
            raise self.fail(keys, f"missing key {sorted(missing)[0]!r}")
        command = spec["command"]
        if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
            raise self.fail([*keys, "command"], "must be a non-empty list of strings")
        params = self._params([*keys, "params"], spec["params"])
        hardware = self._hardware([*keys, "hardware"], spec["hardware"])
        return Entrypoint(
            application=app,
            version=version,
            name=name,
            summary=self._text([*keys, "summary"], spec["summary"]),
            description=str(spec.get("description", "")).strip(),
            command=tuple(command),
            inputs=self._inputs([*keys, "inputs"], spec["inputs"]),
            params_schema=params,
            outputs=tuple(self._outputs([*keys, "outputs"], spec["outputs"])),
            hardware=hardware,
            timeout_s=self._positive_int([*keys, "timeout_s"], spec["timeout_s"]),
            max_attempts=self._positive_int([*keys, "max_attempts"], spec["max_attempts"]),
            retry_on_algorithm_failure=bool(spec.get("retry_on_algorithm_failure", False)),
            cpu_route=(self._cpu_route([*keys, "cpu_route"], spec["cpu_route"], hardware, params)
                       if "cpu_route" in spec else None),
        )

    def _cpu_route(self, keys: list[str], value: Any, hardware: dict[str, int],
                   params: dict[str, Any]) -> CpuRoute:
        """`cpu_route: {cpu, memory_gb, timeout_s, slowdown?}` on a GPU entrypoint whose params have a `device`
        field that accepts "cpu" (the user's choice is what routes a job there)."""
        if not isinstance(value, dict):
            raise self.fail(keys, "must be {cpu: N, memory_gb: N, timeout_s: N, slowdown: N (optional)}")
        unknown = set(value) - _CPU_ROUTE_KEYS
        if unknown:
            raise self.fail([*keys, sorted(unknown)[0]],
                            f"unknown key (allowed: {', '.join(sorted(_CPU_ROUTE_KEYS))})")
        missing = _CPU_ROUTE_REQUIRED - set(value)
        if missing:
            raise self.fail(keys, f"missing key {sorted(missing)[0]!r}")
        for k in ("cpu", "memory_gb"):
            v = value[k]
            if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
                raise self.fail([*keys, k], "must be a number ≥ 0")
        slowdown = value.get("slowdown")
        if slowdown is not None and (not isinstance(slowdown, int | float) or isinstance(slowdown, bool)
                                     or not math.isfinite(slowdown) or slowdown < 1):
            raise self.fail([*keys, "slowdown"], "must be a number ≥ 1 (times longer than on a GPU)")
        timeout_s = self._positive_int([*keys, "timeout_s"], value["timeout_s"])
        if not hardware["gpu"]:
            raise self.fail(keys, "only an entrypoint that asks for a GPU (hardware.gpu ≥ 1) has a CPU route")
        device = params.get("properties", {}).get(DEVICE_PARAM)
        if not isinstance(device, dict) or ("enum" in device and "cpu" not in device["enum"]):
            raise self.fail(keys, f"needs a params field {DEVICE_PARAM!r} that accepts \"cpu\" "
                                  "(the user's choice routes the job)")
        route_hardware = {"gpu": 0, "gpu_memory_gb": 0, "cpu": value["cpu"], "memory_gb": value["memory_gb"]}
        return CpuRoute(hardware=route_hardware, timeout_s=timeout_s,
                        slowdown=float(slowdown) if slowdown is not None else None)

    def _text(self, keys: list[str], value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(keys, "must be a non-empty string")
        return value.strip()

    def _positive_int(self, keys: list[str], value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise self.fail(keys, "must be a positive integer")
        return value

    def _inputs(self, keys: list[str], value: Any) -> dict[str, InputSlot]:
        if not isinstance(value, dict):
            raise self.fail(keys, "must be a map of slot name → {suffixes, count}")
        slots = {}
        for slot, spec in value.items():
            self._check_name([*keys, str(slot)], slot)
            if not isinstance(spec, dict) or set(spec) - {"suffixes", "count"} or "suffixes" not in spec:
                raise self.fail([*keys, slot], "must be {suffixes: [.ext, ...], count: N | \"A..B\" | \"N..\"}")
            suffixes = spec["suffixes"]
            if not isinstance(suffixes, list) or not all(isinstance(s, str) and s.startswith(".") for s in suffixes):
                raise self.fail([*keys, slot, "suffixes"], "must be a list like [.tif, .tiff]")
            lo, hi = self._count([*keys, slot, "count"], spec.get("count", 1))
            slots[slot] = InputSlot(slot, tuple(s.lower() for s in suffixes), lo, hi)
        return slots

    def _count(self, keys: list[str], count: Any) -> tuple[int, int | None]:
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
            return count, count
        match = re.fullmatch(r"(\d+)\.\.(\d*)", str(count))
        if not match:
            raise self.fail(keys, 'must be an integer, "A..B" or "N.." (unbounded)')
        lo, hi = int(match[1]), (int(match[2]) if match[2] else None)
        if hi is not None and hi < lo:
            raise self.fail(keys, f"upper bound {hi} is below lower bound {lo}")
        return lo, hi

    def _params(self, keys: list[str], value: Any) -> dict[str, Any]:
        if isinstance(value, dict) and set(value) == {"$ref"}:
            ref = self.path.parent / value["$ref"]
            try:
                schema = json.loads(ref.read_text())
            except FileNotFoundError:
                raise self.fail([*keys, "$ref"], f"schema file {ref} not found") from None
            except json.JSONDecodeError as exc:
                raise self.fail([*keys, "$ref"], f"{ref} is not valid JSON: {exc}") from None
        elif isinstance(value, dict):
            schema = value
        else:
            raise self.fail(keys, "must be a JSON Schema object or {$ref: schemas/NAME.json}")
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = ".".join(str(p) for p in exc.path)
            raise self.fail([*keys, *([where] if where else [])], f"invalid JSON Schema: {exc.message}") from None
        if schema.get("type") != "object":
            raise self.fail([*keys, "type"], 'params schema must have type "object"')
        try:
            resolve_params(schema, {})
        except ParamsError as exc:
            raise self.fail([*keys, exc.path], f"defaults do not validate: {exc.message}") from None
        return schema

    def _outputs(self, keys: list[str], value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(keys, "must be a list of output names")
        return value

    def _hardware(self, keys: list[str], value: Any) -> dict[str, int]:
        if not isinstance(value, dict):
            raise self.fail(keys, "must be {gpu, gpu_memory_gb, cpu, memory_gb}")
        unknown = set(value) - _HARDWARE_KEYS
        if unknown:
            raise self.fail([*keys, sorted(unknown)[0]], f"unknown key (allowed: {', '.join(sorted(_HARDWARE_KEYS))})")
        hardware = {k: value.get(k, 0) for k in sorted(_HARDWARE_KEYS)}
        for k, v in hardware.items():
            if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
                raise self.fail([*keys, k], "must be a number ≥ 0")
        if hardware["gpu"] and hardware["gpu_memory_gb"] > GPU_TIERS_GB[-1]:
            raise self.fail([*keys, "gpu_memory_gb"], f"no GPU tier above {GPU_TIERS_GB[-1]} GB")
        return hardware


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def resolve_params(schema: dict[str, Any], params: dict[str, Any],
                   validator: jsonschema.protocols.Validator | None = None) -> dict[str, Any]:
    """Fill defaults (recursively for nested objects), then validate; raises ParamsError with the field path.

    `validator`, when given, is `schema` already compiled (`Entrypoint.params_validator`)."""
    if not isinstance(params, dict):
        raise ParamsError("", "params must be a JSON object")
    filled = _fill_defaults(schema, copy.deepcopy(params))
    validator = validator or jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: (len(e.path), list(map(str, e.path))))
    if errors:
        err = errors[0]
        path = ".".join(str(p) for p in err.absolute_path)
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            path = ".".join([*map(str, err.absolute_path), extra[0]]) if extra else path
            raise ParamsError(path, "unknown parameter")
        raise ParamsError(path, err.message)
    return filled


def _fill_defaults(schema: dict[str, Any], value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    for name, sub in schema.get("properties", {}).items():
        if name not in value and "default" in sub:
            value[name] = copy.deepcopy(sub["default"])
        if name in value and isinstance(sub, dict) and sub.get("type") == "object":
            value[name] = _fill_defaults(sub, value[name])
    return value


def load(path: str | Path | None = None) -> Registry:
    """Parse and validate a registry file (the packaged one by default), with the pipelines declared in
    `pipelines.yaml` beside it (algorithms/pipelines.py) as application `pipeline`."""
    from algorithms import pipelines

    registry = _Loader(Path(path) if path else DEFAULT_PATH).load()
    if pipelines.APPLICATION in registry.applications:
        raise RegistryError(f"{registry.path}: {pipelines.APPLICATION}: the name is reserved for pipelines")
    entries = pipelines.load(registry.path.with_name("pipelines.yaml"), registry)
    if entries:
        registry.applications[pipelines.APPLICATION] = {pipelines.VERSION: entries}
        registry.default_versions[pipelines.APPLICATION] = pipelines.VERSION
    return registry
