"""Localization extraction, de-biasing and color assignment on constructed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms.decode_plex.model import ModelConfig
from algorithms.decode_plex.postprocess import (
    assign_colors,
    color_table,
    debias,
    dye_fractions,
    extract,
    filter_table,
    find_dye_ratios,
    pixel_locked_bias,
)
from algorithms.io.table import LocTable


def blank_outputs(cfg: ModelConfig, n=1, h=16, w=16):
    return {
        "prob": torch.zeros(n, 1, h, w), "photons": torch.full((n, cfg.n_photons, h, w), 0.5),
        "offset": torch.zeros(n, 2 + int(cfg.three_d), h, w), "sigma": torch.full((n, cfg.n_dims, h, w), 0.2),
        "bg": torch.full((n, cfg.channels, h, w), 0.25),
    }


def test_extract_places_emitters_at_pixel_centre_plus_offset_in_nm():
    cfg = ModelConfig(three_d=True, px_size_nm=(100.0, 110.0), photon_scale=1000.0, z_scale_nm=600.0, bg_scale=80.0)
    out = blank_outputs(cfg, n=2)
    out["prob"][1, 0, 5, 7] = 0.9
    out["offset"][1, :, 5, 7] = torch.tensor([0.2, -0.1, 0.5])
    # A hard case: probability spread over two neighbours integrates to one detection at the larger.
    out["prob"][0, 0, 10, 3], out["prob"][0, 0, 10, 4] = 0.3, 0.35
    out["prob"][0, 0, 2, 2] = 0.2  # below threshold alone
    table = extract(out, cfg, prob_threshold=0.5, frame_offset=10)
    assert len(table) == 2
    order = np.argsort(table["frame"])
    t = table.select(order)
    assert list(t["frame"]) == [10, 11]
    assert t["x"][1] == pytest.approx((7 + 0.5 + 0.2) * 100.0)
    assert t["y"][1] == pytest.approx((5 + 0.5 - 0.1) * 110.0)
    assert t["z"][1] == pytest.approx(0.5 * 600.0)
    assert t["prob"][1] == pytest.approx(0.9) and t["prob"][0] == pytest.approx(0.65)
    # default position: the 3×3 average weighted by probability / σ² (σ equal here) — between the two pixels
    assert t["x"][0] == pytest.approx((0.3 * 350.0 + 0.35 * 450.0) / 0.65, rel=1e-5)
    peak = extract(out, cfg, prob_threshold=0.5, frame_offset=10, position="peak")
    assert sorted(peak["x"]) == pytest.approx(sorted([450.0, (7 + 0.5 + 0.2) * 100.0]))
    assert t["photons"][0] == pytest.approx(500.0) and t["bg"][0] == pytest.approx(20.0)
    assert t["sigma_x"][0] == pytest.approx(0.2 * 100.0) and t["sigma_z"][0] == pytest.approx(0.2 * 600.0)


def test_weighted_position_trusts_the_more_precise_neighbour():
    cfg = ModelConfig(three_d=False)
    out = blank_outputs(cfg)
    out["prob"][0, 0, 4, 4], out["prob"][0, 0, 4, 5] = 0.6, 0.3
    out["offset"][0, 0, 4, 4], out["offset"][0, 0, 4, 5] = 0.3, -0.5  # predict x = 4.8 and 5.0 px
    out["sigma"][0, 1, 4, 4], out["sigma"][0, 1, 4, 5] = 0.1, 0.05  # the neighbour is twice as precise
    x = extract(out, cfg, prob_threshold=0.5)["x"][0] / 100.0
    w0, w1 = 0.6 / 0.1**2, 0.3 / 0.05**2
    assert x == pytest.approx((w0 * 4.8 + w1 * 5.0) / (w0 + w1), rel=1e-5)
    with pytest.raises(ValueError, match="position"):
        extract(out, cfg, position="centre")


def test_equal_neighbours_give_one_detection():
    cfg = ModelConfig(three_d=False)
    out = blank_outputs(cfg)
    out["prob"][0, 0, 4, 4] = out["prob"][0, 0, 4, 5] = 0.5
    table = extract(out, cfg, prob_threshold=0.5)
    assert len(table) == 1 and table["prob"][0] == pytest.approx(1.0)


def test_filter_by_probability_and_sigma():
    t = LocTable.from_arrays(frame=[0, 0, 0], x=[0, 1, 2], y=[0, 0, 0], prob=[0.9, 0.4, 0.8],
                             sigma_x=[10, 10, 50], sigma_y=[10, 10, 10])
    assert list(filter_table(t, min_prob=0.5, max_sigma_nm=30)["x"]) == [0]


def test_debias_makes_skewed_subpixel_histogram_uniform():
    rng = np.random.default_rng(0)
    n, px = 20000, 100.0
    base = rng.integers(0, 50, (n, 2))
    frac = rng.beta(4, 4, (n, 2))  # piled up at the pixel centre, as a biased network does
    z = rng.uniform(-400, 400, n)
    t = LocTable.from_arrays(frame=np.zeros(n, int), x=(base[:, 0] + frac[:, 0]) * px,
                             y=(base[:, 1] + frac[:, 1]) * px, z=z, sigma_x=np.full(n, 10.0), sigma_y=np.full(n, 10.0))

    def worst_bin_deviation(table, axis):
        f = (table[axis] / px) % 1.0
        hist = np.histogram(f, bins=10, range=(0, 1))[0]
        return np.abs(hist / hist.mean() - 1).max()

    assert worst_bin_deviation(t, "x") > 0.5
    d = debias(t, (px, px), z_step_nm=50.0)
    # 16 slabs of ~1250: a uniform histogram's 10-bin counts deviate by ≲ 10 % here
    assert worst_bin_deviation(d, "x") < 0.1 and worst_bin_deviation(d, "y") < 0.1
    assert np.array_equal(np.floor(d["x"] / px), base[:, 0])  # stays in its pixel
    assert d.meta["debiased"]["z_step_nm"] == 50.0


def _field(rng, n_sites, per_site, px=100.0, frac=None, jitter_nm=8.0, size_px=64):
    """Localizations of `n_sites` emitters over a size_px² field, each seen `per_site` times with `jitter_nm`
    precision; `frac(f)` maps the fitted sub-pixel positions (a pixel-locked bias of the estimator)."""
    sites = rng.uniform(0, size_px * px, (n_sites, 2))
    xy = np.repeat(sites, per_site, axis=0) + rng.normal(0, jitter_nm, (n_sites * per_site, 2))
    if frac is not None:
        xy = (np.floor(xy / px) + frac((xy / px) % 1.0)) * px
    n = len(xy)
    return LocTable.from_arrays(frame=np.arange(n), x=xy[:, 0], y=xy[:, 1], sigma_x=np.full(n, jitter_nm),
                                sigma_y=np.full(n, jitter_nm)), sites


def pulled_to_centre(f):
    return 0.5 + (f - 0.5) * (1 - 0.6 * np.abs(f - 0.5) * 2) ** 0.5  # denser at the pixel centre


@pytest.mark.parametrize("seed", range(5))
def test_bias_test_finds_a_pixel_locked_bias_and_leaves_structure_alone(seed):
    rng = np.random.default_rng(seed)
    biased, _ = _field(rng, 3000, 3, frac=pulled_to_centre)
    found = pixel_locked_bias(biased, (100.0, 100.0))
    assert found["tested"] and found["biased"], found
    uniform, _ = _field(rng, 3000, 3)
    assert not pixel_locked_bias(uniform, (100.0, 100.0))["biased"]
    # Sixty emitters seen 150 times each: far from uniform sub-pixel positions, and no bias at all.
    clustered, _ = _field(rng, 60, 150)
    result = pixel_locked_bias(clustered, (100.0, 100.0))
    assert result["tested"] and not result["biased"], result


def test_equalising_a_few_emitters_moves_them_which_is_why_it_is_not_the_default():
    rng = np.random.default_rng(3)
    table, sites = _field(rng, 25, 40)
    assert not pixel_locked_bias(table, (100.0, 100.0))["biased"]  # so the default leaves them as fitted
    moved = debias(table, (100.0, 100.0))
    truth = np.repeat(sites, 40, axis=0)
    rmse = {name: float(np.sqrt(np.mean((t["x"] - truth[:, 0]) ** 2))) for name, t in (("raw", table),
                                                                                    ("equalised", moved))}
    assert rmse["equalised"] > 2 * rmse["raw"], rmse


def test_bias_test_needs_enough_of_the_field():
    rng = np.random.default_rng(0)
    few, _ = _field(rng, 20, 5)
    result = pixel_locked_bias(few, (100.0, 100.0))
    assert not result["tested"] and not result["biased"] and "parts of the field" in result["reason"]
    assert pixel_locked_bias(few.select(np.zeros(len(few), bool)), (100.0, 100.0))["reason"] == "no localizations"


def synthetic_pairs(n, ratios, seed):
    rng = np.random.default_rng(seed)
    code = rng.integers(0, len(ratios), n)
    total = rng.uniform(2000, 8000, n)
    true = dye_fractions(ratios)[code] * total[:, None]
    sigma = np.sqrt(true + 50.0 * 9)  # shot noise plus a background term, photons
    observed = true + rng.normal(0, 1, true.shape) * sigma
    return code, observed, sigma


def test_color_assignment_recovers_dyes_on_synthetic_photon_pairs():
    ratios = [0.21, 0.02]  # channel-1 / channel-0 photons of the two dyes (AF647 / CF680 in the paper)
    code, observed, sigma = synthetic_pairs(5000, ratios, seed=1)
    pred, post = assign_colors(observed, sigma, dye_fractions(ratios), min_posterior=0.9)
    assigned = pred >= 0
    assert (pred[assigned] == code[assigned]).mean() > 0.99
    assert (~assigned).mean() < 0.05
    assert np.all(post[assigned] >= 0.9)


def test_dye_ratios_found_by_em_and_used():
    ratios = [0.21, 0.02]
    code, observed, sigma = synthetic_pairs(5000, ratios, seed=2)
    found = find_dye_ratios(observed, 2, sigma)
    assert found[0] == pytest.approx(0.21, rel=0.03) and found[1] == pytest.approx(0.02, rel=0.1)
    n = len(code)
    t = LocTable.from_arrays(frame=np.zeros(n, int), x=np.zeros(n), y=np.zeros(n), photons_0=observed[:, 0],
                             photons_1=observed[:, 1], sigma_photons_0=sigma[:, 0], sigma_photons_1=sigma[:, 1])
    colored = color_table(t, n_dyes=2)
    ok = colored["code"] >= 0
    assert (colored["code"][ok] == code[ok]).mean() > 0.98


def test_dye_ratios_hold_with_a_few_dozen_localizations():
    """Where the histogram-peak method missed a dye in 10–20 % of sets (bench/dye_ratios.py): 60 sets of 30."""
    for ratios in ([0.21, 0.02], [0.5, 0.3]):
        for seed in range(60):
            _, observed, sigma = synthetic_pairs(30, ratios, seed=100 + seed)
            found = find_dye_ratios(observed, 2, sigma)
            assert all(abs(f - r) / r < 0.3 for f, r in zip(found, ratios, strict=True)), (ratios, seed, found)


def test_one_dye_alone_is_reported_instead_of_split_in_two():
    _, observed, sigma = synthetic_pairs(500, [0.21], seed=3)
    with pytest.raises(ValueError, match="do not separate into 2 dyes"):
        find_dye_ratios(observed, 2, sigma)
    with pytest.raises(ValueError, match="too few localizations"):
        find_dye_ratios(observed[:3], 2, sigma[:3])
