"""The new-job form's structured inputs (portal/web/schema_form.py): fixed-length number arrays as one input
per item with axis labels and units, `oneOf`/`anyOf` as a select with a sub-form per object alternative,
per-channel pairs as rows behind a select; what the browser sends parses back to the params the schema means,
and no default is ever shown as Python's repr of a dict. Also: the science defaults the forms show agree."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.http import QueryDict
from django.test import Client

from algorithms.decode_plex.cli import FIT_DEFAULTS, TRAIN_DEFAULTS, dye_count
from portal.web import schema_form

SCHEMAS = Path(__file__).resolve().parents[2] / "algorithms" / "schemas"
TRAIN = json.loads((SCHEMAS / "decode_plex_train.json").read_text())
SIMULATE = json.loads((SCHEMAS / "simulation_simulate.json").read_text())
FIT = json.loads((SCHEMAS / "decode_plex_fit.json").read_text())
VOID = {"input", "br", "img", "meta", "link", "hr", "source", "wbr", "area", "base", "col", "embed", "param", "track"}


class FormValues(HTMLParser):
    """What a browser sends for the form `form_id` as rendered: text and number inputs, checked boxes and
    radios, each select's selected option (else its first). Controls inside a `hidden` element are left out,
    as locus.js disables them (a sub-form of an alternative not chosen)."""

    def __init__(self, form_id: str = "job-form"):
        super().__init__()
        self.form_id, self.values = form_id, QueryDict(mutable=True)
        self.stack: list[tuple[str, bool]] = []  # (tag, hidden here or above)
        self.in_form = False
        self.select: tuple[str, list[tuple[str, bool]]] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        hidden = (self.stack[-1][1] if self.stack else False) or "hidden" in a
        if tag == "form" and a.get("id") == self.form_id:
            self.in_form = True
        if tag not in VOID:
            self.stack.append((tag, hidden))
        if not self.in_form or hidden or "disabled" in a or not a.get("name") and tag != "option":
            return
        if tag == "input" and a.get("type", "text") not in ("submit", "file", "button"):
            if a.get("type") in ("checkbox", "radio"):
                if "checked" in a:
                    self.values.appendlist(a["name"], a.get("value", "on"))
            else:
                self.values.appendlist(a["name"], a.get("value", ""))
        elif tag == "select":
            self.select = (a["name"], [])
        elif tag == "option" and self.select is not None:
            self.select[1].append((a.get("value", ""), "selected" in a))

    def handle_endtag(self, tag):
        if tag == "select" and self.select is not None:
            name, options = self.select
            chosen = [v for v, selected in options if selected] or [options[0][0]]
            self.values.appendlist(name, chosen[0])
            self.select = None
        if tag == "form":
            self.in_form = False
        while self.stack:
            if self.stack.pop()[0] == tag:
                break


def form_values(html: str, form_id: str = "job-form") -> QueryDict:
    parser = FormValues(form_id)
    parser.feed(html)
    return parser.values


def post(**values) -> QueryDict:
    q = QueryDict(mutable=True)
    for k, v in values.items():
        q[k] = v
    return q


def fields_of(schema: dict) -> dict[str, schema_form.Field]:
    return {f.path: f for f in schema_form.leaves(schema_form.build(schema))}


# --- fixed-length number arrays -------------------------------------------------------------------------------

def test_fixed_length_number_arrays_are_one_input_per_item_with_axis_labels_and_units():
    f = fields_of(TRAIN)
    size, photons, background, z = f["frame_size"], f["photons"], f["background"], f["z_range_nm"]
    assert size.kind == "tuple" and (size.label, size.unit) == ("Training frame size", "px")
    assert [(p.label, p.name, p.value) for p in size.parts] == [("H", "p.frame_size.0", "32"), ("W", "p.frame_size.1", "32")]
    assert size.default_text == "32 × 32" and size.bounds == "8 – 512" and size.step == "1"
    assert (photons.label, photons.unit, [p.label for p in photons.parts]) == ("Photon range", "photons", ["min", "max"])
    assert photons.default_text == "1000 – 5000" and photons.step == "any"
    assert (background.unit, background.default_text) == ("photons/px", "10 – 100")
    assert (z.label, z.unit, z.default_text) == ("z range", "nm from focus", "-500 – 500")
    shift = fields_of(FIT)["shift_px"]
    assert (shift.label, shift.unit, [p.label for p in shift.parts]) == (
        "Whole-pixel shift of the second channel", "px", ["x", "y"])
    simulate = fields_of(SIMULATE)
    assert (simulate["frame_shape"].label, [p.label for p in simulate["frame_shape"].parts]) == ("Frame size", ["H", "W"])
    assert simulate["z_range_nm"].default_text == "automatic" and [p.value for p in simulate["z_range_nm"].parts] == ["", ""]


def test_fixed_length_inputs_parse_to_lists_blank_takes_the_default_and_half_filled_is_an_error():
    fields = schema_form.build(TRAIN)
    params, errors = schema_form.parse(TRAIN, post(**{"p.photons.0": "500", "p.photons.1": "8e3",
                                                      "p.frame_size.0": "64", "p.frame_size.1": "48"}), fields)
    assert errors == {}
    assert params["photons"] == [500, 8000.0] and params["frame_size"] == [64, 48] and "background" not in params
    fields = schema_form.build(TRAIN)
    _, errors = schema_form.parse(TRAIN, post(**{"p.background.0": "20", "p.frame_size.0": "6.5",
                                                 "p.frame_size.1": "8"}), fields)
    assert errors == {"background": "give max too, or leave all empty for the default",
                      "frame_size": "must be whole numbers"}
    by_path = {f.path: f for f in schema_form.leaves(fields)}
    assert [p.value for p in by_path["background"].parts] == ["20", ""]  # the form keeps what was typed
    assert schema_form.attach_errors(fields, {"photons.1": "0 is less than or equal to the minimum of 0"}) == {}
    assert by_path["photons"].error.startswith("0 is less")


# --- a preset or custom settings: oneOf / anyOf ------------------------------------------------------------------

def test_a_preset_or_custom_camera_is_a_select_with_a_sub_form_of_the_settings():
    camera = fields_of(TRAIN)["camera"]
    assert camera.kind == "choice" and camera.value == '"perfect"' and camera.default_text == "perfect"
    assert [label for _, label in camera.choices] == ["perfect", "smlm-challenge-emccd", "scmos-typical",
                                                      "custom settings…"]
    custom = camera.options[-1]
    assert custom.token == "form:1" and [c.key for c in custom.children][:3] == ["preset", "kind", "qe"]
    gain = next(c for c in custom.children if c.key == "read_noise_e")
    assert (gain.label, gain.unit, gain.name) == ("Read noise", "e⁻", "p.camera~1.read_noise_e")
    preset = custom.children[0]
    assert preset.choices[0] == ("", "—")  # no default: leaving it unset is a choice too

    fields = schema_form.build(TRAIN)
    params, errors = schema_form.parse(TRAIN, post(**{"p.camera": '"scmos-typical"', "p.camera~1.qe": "0.5"}), fields)
    assert errors == {} and params["camera"] == "scmos-typical"  # the hidden sub-form is not read
    fields = schema_form.build(TRAIN)
    params, errors = schema_form.parse(TRAIN, post(**{
        "p.camera": "form:1", "p.camera~1.preset": '"smlm-challenge-emccd"', "p.camera~1.kind": "",
        "p.camera~1.em_gain": "300", "p.camera~1.baseline": "100", "p.camera~1.qe": ""}), fields)
    assert errors == {} and params["camera"] == {"preset": "smlm-challenge-emccd", "em_gain": 300, "baseline": 100}
    fields = schema_form.build(TRAIN)
    _, errors = schema_form.parse(TRAIN, post(**{"p.camera": "form:1", "p.camera~1.qe": "high"}), fields)
    assert errors == {"camera.qe": "must be a number"}

    # A cloned job's custom camera opens on its sub-form, filled in.
    clone = {f.path: f for f in schema_form.leaves(schema_form.build(TRAIN, {"camera": {"kind": "emccd", "em_gain": 150}}))}
    assert clone["camera"].value == "form:1" and clone["camera.em_gain"].value == "150"
    assert clone["camera"].describe({"kind": "emccd", "em_gain": 150}) == "custom settings (camera type emccd, em gain 150)"


def test_simulate_brightness_structure_and_camera_are_sub_forms_and_what_they_cannot_draw_stays_json():
    f = fields_of(SIMULATE)
    flux = f["flux"]
    assert flux.kind == "choice" and flux.value == "form:0"  # the default {dist: uniform, low, high}
    assert (f["flux.low"].value, f["flux.high"].value) == ("1000", "5000")
    assert flux.default_text == "uniform (min 1000 photons, max 5000 photons)"
    assert "'" not in flux.default_text and "{" not in flux.default_text
    assert [label for _, label in f["structure"].choices] == ["uniform", "filaments", "filaments, with settings…",
                                                              "positions…", "other (JSON)…"]
    fields = schema_form.build(SIMULATE)
    params, errors = schema_form.parse(SIMULATE, post(**{
        "p.flux": "form:1", "p.flux~1.mean": "2000", "p.flux~1.std": "300",
        "p.structure": "form:1", "p.structure~1.n_filaments": "6",
        "p.background.low": "20", "p.background.high": "60", "p.psf.sigma_px": "1.3"}), fields)
    assert errors == {}
    assert params["flux"] == {"dist": "normal", "mean": 2000, "std": 300}  # the alternative's fixed key is set
    assert params["structure"] == {"kind": "filaments", "n_filaments": 6}
    assert params["background"] == {"low": 20, "high": 60} and params["psf"] == {"sigma_px": 1.3}
    # Per-channel brightness is valid for the API but has no sub-form: a clone shows it as JSON, and it posts back.
    per_channel = {"dist": "uniform", "low": [1000, 500], "high": [3000, 1500]}
    fields = schema_form.build(SIMULATE, {"flux": per_channel})
    flux = next(x for x in fields if x.path == "flux")
    assert flux.value == "form:3" and json.loads(flux.options[3].children[0].value) == per_channel
    params, errors = schema_form.parse(SIMULATE, post(**{"p.flux": "form:3", "p.flux~3": json.dumps(per_channel)}),
                                       fields)
    assert errors == {} and params["flux"] == per_channel
    # So is a value with keys the sub-form does not show: nothing is dropped on the way back.
    extra = {"kind": "filaments", "n_filaments": 4, "step_nm": 10}
    structure = next(x for x in schema_form.build(SIMULATE, {"structure": extra}) if x.path == "structure")
    assert structure.value == "form:3" and json.loads(structure.options[-1].children[0].value) == extra


def test_per_channel_shifts_are_rows_behind_a_select():
    shifts = fields_of(TRAIN)["shifts_px"]
    assert shifts.kind == "choice" and (shifts.label, shifts.value) == ("Per-channel shift", "[]")
    rows = shifts.options[1]
    assert rows.label == "per channel…" and [r.label for r in rows.children] == [f"channel {i}" for i in range(4)]
    assert [p.label for p in rows.children[1].parts] == ["x", "y"] and rows.children[1].unit == "px"
    fields = schema_form.build(TRAIN)
    params, errors = schema_form.parse(TRAIN, post(**{
        "p.shifts_px": "form:1", "p.shifts_px~1.0.0": "0", "p.shifts_px~1.0.1": "0",
        "p.shifts_px~1.1.0": "1.5", "p.shifts_px~1.1.1": "-2"}), fields)
    assert errors == {} and params["shifts_px"] == [[0, 0], [1.5, -2]]
    fields = schema_form.build(TRAIN)
    _, errors = schema_form.parse(TRAIN, post(**{"p.shifts_px": "form:1", "p.shifts_px~1.1.0": "1",
                                                 "p.shifts_px~1.1.1": "2"}), fields)
    assert errors == {"shifts_px": "channel 0 is empty: fill it in or clear the rows after it"}
    fields = schema_form.build(TRAIN)
    params, errors = schema_form.parse(TRAIN, post(**{"p.shifts_px": "[]"}), fields)
    assert errors == {} and params["shifts_px"] == []
    clone = {f.path: f for f in schema_form.leaves(schema_form.build(TRAIN, {"shifts_px": [[0, 0], [3, 1]]}))}
    assert clone["shifts_px"].value == "form:1" and [p.value for p in clone["shifts_px.1"].parts] == ["3", "1"]


# --- the pages ---------------------------------------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize(("application", "entrypoint"), [("simulation", "simulate"), ("decode-plex", "train"),
                                                         ("decode-plex", "fit")])
def test_the_forms_show_no_python_text_and_no_json_box_for_structured_values(user, application, entrypoint):
    client = Client()
    client.force_login(user)
    page = client.get(f"/jobs/new/?application={application}&entrypoint={entrypoint}").content.decode()
    assert "{&#x27;" not in page and "&#x27;: " not in page and "None" not in page  # Python's repr of a dict
    if entrypoint == "simulate":
        assert 'name="p.frame_shape.0" value="64"' in page and 'name="p.flux~0.low" value="1000"' in page
        assert 'name="p.background.low" value="10"' in page
        assert "default uniform (min 1000 photons, max 5000 photons)" in page
    if entrypoint == "train":
        assert 'name="p.background.0" value="10"' in page and 'name="p.background.1" value="100"' in page
        assert 'data-when-for="param-camera" data-when="form:1" hidden' in page
        assert "default 10 – 100" in page and 'placeholder="JSON"' not in page


# --- consistent, harmless defaults ------------------------------------------------------------------------------

def test_simulate_and_train_defaults_describe_the_same_movies():
    sim, train = SIMULATE["properties"], TRAIN["properties"]
    background = sim["background"]["default"]
    assert train["background"]["default"] == [background["low"], background["high"]] == TRAIN_DEFAULTS["background"]
    flux = sim["flux"]["default"]
    assert train["photons"]["default"] == [flux["low"], flux["high"]] and flux["dist"] == "uniform"
    assert train["px_size_nm"]["default"] == sim["px_size_nm"]["default"]
    assert train["psf_sigma_px"]["default"] == sim["psf"]["default"]["sigma_px"]
    assert train["on_time_frames"]["default"] == sim["on_time_frames"]["default"]
    assert train["camera"]["default"] == sim["camera"]["default"]


def test_a_default_fit_assumes_no_dye_count_and_a_multicolor_one_takes_the_models():
    assert FIT["properties"]["n_dyes"]["default"] is None and FIT_DEFAULTS["n_dyes"] is None
    assert dye_count(None, None, []) == 2  # a model that knows no dyes: the least a colour split needs
    assert dye_count(None, None, [0.2, 1.0, 4.0]) == 3  # the model's own training dyes
    assert dye_count(None, [0.5, 2.0], [0.2, 1.0, 4.0]) == 2  # the ratios given
    assert dye_count(4, None, [0.2, 1.0]) == 4  # as asked
