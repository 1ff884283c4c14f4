"""The registry loader: the packaged file is valid, and every typo is reported with file, key path, problem."""

import textwrap

import pytest

from algorithms import registry

GOOD = """
fit:
  "1.0":
    default: true
    run:
      summary: Fit
      command: [python, -m, algorithms.fit, run]
      inputs: {frames: {suffixes: [.tif], count: "1.."}, calibration: {suffixes: [.mat], count: 1}}
      params: {type: object, properties: {threshold: {type: number, default: 0.5, minimum: 0}},
               additionalProperties: false}
      outputs: [locs]
      hardware: {gpu: 1, gpu_memory_gb: 12, cpu: 2, memory_gb: 8}
      timeout_s: 3600
      max_attempts: 2
"""


def write(tmp_path, text):
    path = tmp_path / "registry.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_packaged_registry_is_valid_and_has_the_selftest():
    reg = registry.load()
    entry = reg.get("diagnostics", None, "selftest")
    assert entry.queue == "cpu"
    assert entry.resolve_params({}) == {"matrix_size": 512, "repeats": 5, "duration_s": 0, "fail_with": 0}


def test_gpu_entry_goes_to_the_smallest_tier_that_covers_it(tmp_path):
    entry = registry.load(write(tmp_path, GOOD)).get("fit", "1.0", "run")
    assert entry.queue == "gpu.16"
    assert entry.inputs["frames"].min_count == 1 and entry.inputs["frames"].max_count is None


@pytest.mark.parametrize(
    ("typo", "fragment"),
    [
        ("summary: Fit", "sumary: Fit"),
        ("timeout_s: 3600", "timeout_s: -1"),
        ("gpu_memory_gb: 12", "gpu_memory_gb: 120"),
        ('"1.0":', "1.0:"),
        ('count: "1.."', 'count: "3..1"'),
        ("default: 0.5", "default: -1"),
        ("type: number", "type: numbr"),
    ],
)
def test_a_typo_names_file_key_path_and_problem(tmp_path, typo, fragment):
    path = write(tmp_path, GOOD.replace(typo, fragment))
    with pytest.raises(registry.RegistryError) as err:
        registry.load(path)
    message = str(err.value)
    assert str(path) in message
    assert "fit" in message  # the key path starts at the application


def test_params_errors_carry_the_field_path(tmp_path):
    entry = registry.load(write(tmp_path, GOOD)).get("fit", "1.0", "run")
    with pytest.raises(registry.ParamsError) as err:
        entry.resolve_params({"threshold": -2})
    assert err.value.path == "threshold"
    with pytest.raises(registry.ParamsError) as err:
        entry.resolve_params({"treshold": 1})
    assert err.value.path == "treshold" and "unknown" in err.value.message


def test_unknown_names_say_which_level_is_unknown():
    reg = registry.load()
    for args, field in [(("nope", None, "selftest"), "application"), (("diagnostics", "9.9", "selftest"), "version"),
                        (("diagnostics", "1.0", "nope"), "entrypoint")]:
        with pytest.raises(registry.UnknownEntrypoint) as err:
            reg.get(*args)
        assert err.value.field == field


def test_workers_subscribe_to_every_tier_their_card_covers():
    caps = {"cpu_count": 16, "memory_gb": 128, "gpus": [{"memory_gb": 80}]}
    assert registry.queues_for_capabilities(caps) == ["cpu", "gpu.8", "gpu.16", "gpu.24", "gpu.40", "gpu.80"]
    assert registry.queues_for_capabilities({"cpu_count": 2}) == ["cpu"]
    assert not registry.covers({"cpu_count": 2, "memory_gb": 8, "gpus": []}, {"gpu": 1, "gpu_memory_gb": 8})
