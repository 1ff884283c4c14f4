"""Network shapes and bounded activations for every mode; the Gaussian-mixture loss checked numerically."""

from __future__ import annotations

import math

import pytest
import torch

from algorithms.decode_plex.loss import LossConfig, Targets, decode_plex_loss
from algorithms.decode_plex.model import SIGMA_MAX, SIGMA_MIN, DecodePlexNet, ModelConfig, pad_to_multiple
from algorithms.decode_plex.samples import SampleConfig, sample_batch

MODES = [
    SampleConfig(),
    SampleConfig(three_d=True),
    SampleConfig(mode="biplane", channels=2, window=3, three_d=True, shifts_px=[(0, 0), (1.5, -0.5)]),
    SampleConfig(mode="multicolor", channels=2, window=3, three_d=True, dye_ratios=[0.21, 0.02]),
]


@pytest.mark.parametrize("toy", MODES, ids=["single2d", "single3d", "biplane", "multicolor"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_outputs_have_documented_shapes_and_bounds(toy, per_channel):
    torch.manual_seed(0)
    cfg = toy.model_config(features=8, depth=2, shared_per_channel=per_channel)
    net = DecodePlexNet(cfg)
    batch = sample_batch(toy, 2, seed=1)
    out = net(net.prepare(batch.frames), batch.aux)
    c, (h, w) = toy.channels, toy.frame_size
    n_ph = c if toy.mode == "multicolor" else 1
    dims = 2 + int(toy.three_d)
    assert out["prob"].shape == (2, 1, h, w)
    assert out["photons"].shape == (2, n_ph, h, w)
    assert out["offset"].shape == (2, dims, h, w)
    assert out["sigma"].shape == (2, n_ph + dims, h, w)
    assert out["bg"].shape == (2, c, h, w)
    for key in ("prob", "photons", "bg"):
        assert out[key].min() >= 0 and out[key].max() <= 1
    assert out["offset"].abs().max() <= 1
    assert out["sigma"].min() >= SIGMA_MIN and out["sigma"].max() <= SIGMA_MIN + SIGMA_MAX
    assert batch.aux.shape == (2, 2 * (c - 1), h, w)


def test_bad_configs_and_inputs_are_refused():
    with pytest.raises(ValueError, match="window"):
        ModelConfig(window=2)
    with pytest.raises(ValueError, match="channels"):
        ModelConfig(mode="biplane", channels=1)
    net = DecodePlexNet(ModelConfig(features=8, depth=2))
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.zeros(1, 1, 1, 30, 32))
    with pytest.raises(ValueError, match="window 1"):
        net(torch.zeros(1, 3, 1, 32, 32))
    padded, (h, w) = pad_to_multiple(torch.zeros(1, 1, 1, 30, 31), 4)
    assert padded.shape[-2:] == (32, 32) and (h, w) == (30, 31)


@pytest.mark.parametrize("toy", MODES[1:], ids=["single3d", "biplane", "multicolor"])
def test_loss_is_finite_and_gradient_reaches_every_parameter(toy):
    torch.manual_seed(0)
    cfg = toy.model_config(features=8, depth=1)
    net = DecodePlexNet(cfg)
    batch = sample_batch(toy, 3, seed=2)
    loss, parts = decode_plex_loss(net(net.prepare(batch.frames), batch.aux), batch.targets, cfg)
    assert math.isfinite(loss.item()) and all(math.isfinite(v) for v in parts.values())
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def _hand_outputs(p, photons, off, sigma, bg, h=1, w=1):
    t = lambda v, n: torch.tensor(v, dtype=torch.float64).reshape(1, n, h, w)  # noqa: E731
    return {"prob": t(p, 1), "photons": t(photons, 1), "offset": t(off, len(off) // (h * w)),
            "sigma": t(sigma, len(sigma) // (h * w)), "bg": t(bg, 1)}


def test_loss_matches_hand_computed_value_on_one_pixel():
    cfg = ModelConfig(three_d=False, photon_scale=1000.0, bg_scale=100.0)
    # one pixel, p = 0.5, mean photons 0.4 (=400), x = 0.5 + 0.1, y = 0.5 - 0.2, σ = (0.1, 0.2, 0.3)
    out = _hand_outputs([0.5], [0.4], [0.1, -0.2], [0.1, 0.2, 0.3], [0.3])
    tg = Targets(xy_px=torch.tensor([[[0.55, 0.35]]], dtype=torch.float64),
                 photons=torch.tensor([[[450.0]]], dtype=torch.float64),
                 mask=torch.tensor([[True]]), bg=torch.full((1, 1, 1, 1), 20.0, dtype=torch.float64))
    loss, parts = decode_plex_loss(out, tg, cfg, LossConfig(var_floor=0.05))
    var = 0.25 + 0.05
    count = 0.5 * (math.log(2 * math.pi) + math.log(var)) + 0.25 / (2 * var)
    loc = 0.0
    for u, mu, s in [(0.45, 0.4, 0.1), (0.55, 0.6, 0.2), (0.35, 0.3, 0.3)]:
        loc += 0.5 * ((u - mu) / s) ** 2 + math.log(s) + 0.5 * math.log(2 * math.pi)
    bg = (0.3 - 0.2) ** 2
    assert parts["count"] == pytest.approx(count, rel=1e-9)
    assert parts["loc"] == pytest.approx(loc, rel=1e-9)
    assert parts["bg"] == pytest.approx(bg, rel=1e-9)
    assert loss.item() == pytest.approx(count + loc + bg, rel=1e-9)


def test_mixture_weights_are_normalised_probabilities():
    cfg = ModelConfig(three_d=False, photon_scale=1.0)
    # two pixels side by side with p = (0.2, 0.6); the emitter sits exactly on pixel 1's mean
    out = _hand_outputs([0.2, 0.6], [1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.5] * 6, [0.0, 0.0], h=1, w=2)
    tg = Targets(xy_px=torch.tensor([[[1.5, 0.5]]], dtype=torch.float64),
                 photons=torch.tensor([[[1.0]]], dtype=torch.float64), mask=torch.tensor([[True]]))
    _, parts = decode_plex_loss(out, tg, cfg)
    norm = lambda d: math.exp(-0.5 * (d / 0.5) ** 2) / (0.5 * math.sqrt(2 * math.pi))  # noqa: E731
    mix = 0.25 * norm(1.0) * norm(0) * norm(0) + 0.75 * norm(0) ** 3
    assert parts["loc"] == pytest.approx(-math.log(mix), rel=1e-9)


def test_gradient_matches_finite_differences():
    cfg = ModelConfig(three_d=True, photon_scale=1000.0, z_scale_nm=500.0)
    gen = torch.Generator().manual_seed(3)
    h = w = 3

    def raw(n):
        return torch.randn(1, n, h, w, dtype=torch.float64, generator=gen, requires_grad=True)

    logits, ph, off, sig, bg = raw(1), raw(1), raw(3), raw(4), raw(1)
    tg = Targets(xy_px=torch.tensor([[[1.3, 1.7], [2.2, 0.4]]], dtype=torch.float64),
                 photons=torch.tensor([[[500.0], [800.0]]], dtype=torch.float64),
                 mask=torch.tensor([[True, True]]), z_nm=torch.tensor([[100.0, -200.0]], dtype=torch.float64),
                 bg=torch.full((1, 1, h, w), 30.0, dtype=torch.float64))

    def f(logits, ph, off, sig, bg):
        out = {"prob": torch.sigmoid(logits), "photons": torch.sigmoid(ph), "offset": torch.tanh(off),
               "sigma": torch.sigmoid(sig) * SIGMA_MAX + SIGMA_MIN, "bg": torch.sigmoid(bg)}
        return decode_plex_loss(out, tg, cfg)[0]

    assert torch.autograd.gradcheck(f, (logits, ph, off, sig, bg), eps=1e-6, atol=1e-5)


def test_perfect_prediction_has_lower_loss_than_a_displaced_one():
    cfg = ModelConfig(three_d=False, photon_scale=1000.0)
    h = w = 4
    tg = Targets(xy_px=torch.tensor([[[1.7, 2.2]]], dtype=torch.float64),
                 photons=torch.tensor([[[500.0]]], dtype=torch.float64), mask=torch.tensor([[True]]))

    def outputs(dx):
        prob = torch.full((1, 1, h, w), 1e-4, dtype=torch.float64)
        prob[0, 0, 2, 1] = 0.999
        off = torch.zeros(1, 2, h, w, dtype=torch.float64)
        off[0, 0, 2, 1], off[0, 1, 2, 1] = 0.2 + dx, -0.3
        return {"prob": prob, "photons": torch.full((1, 1, h, w), 0.5, dtype=torch.float64), "offset": off,
                "sigma": torch.full((1, 3, h, w), 0.05, dtype=torch.float64),
                "bg": torch.zeros(1, 1, h, w, dtype=torch.float64)}

    perfect = decode_plex_loss(outputs(0.0), tg, cfg)[0].item()
    assert perfect < decode_plex_loss(outputs(0.1), tg, cfg)[0].item()
    assert perfect < decode_plex_loss(outputs(0.3), tg, cfg)[0].item()


def test_empty_frames_penalised_by_default_and_ignorable():
    cfg = ModelConfig(three_d=False)
    tg = Targets(xy_px=torch.zeros(1, 1, 2), photons=torch.zeros(1, 1, 1), mask=torch.tensor([[False]]))

    def out(p):
        return {"prob": torch.full((1, 1, 4, 4), p), "photons": torch.zeros(1, 1, 4, 4),
                "offset": torch.zeros(1, 2, 4, 4), "sigma": torch.ones(1, 3, 4, 4), "bg": torch.zeros(1, 1, 4, 4)}

    busy, quiet = decode_plex_loss(out(0.2), tg, cfg)[1], decode_plex_loss(out(1e-4), tg, cfg)[1]
    assert busy["count"] > quiet["count"] and math.isfinite(quiet["count"])  # bounded thanks to the floor
    assert quiet["count"] > 0.5 * math.log(2 * math.pi * 0.05) - 1e-3
    assert busy["loc"] == 0.0
    ignored = decode_plex_loss(out(0.2), tg, cfg, LossConfig(empty_frames="ignore"))[1]
    assert ignored["count"] == 0.0


def test_tiny_model_overfits_fixed_frames():
    torch.manual_seed(0)
    toy = SampleConfig(frame_size=(16, 16), density_per_um2=0.8)
    cfg = toy.model_config(features=8, depth=1)
    net = DecodePlexNet(cfg)
    batch = sample_batch(toy, 4, seed=5)
    x = net.prepare(batch.frames)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        loss, _ = decode_plex_loss(net(x, batch.aux), batch.targets, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # The loss is a negative log-likelihood and may go below zero: measure the fall in absolute terms. Adam's
    # path is bumpy (a single step can jump back up by a few units), so the end is the last 10 steps' mean.
    first, last = losses[0], sum(losses[-10:]) / 10
    assert last < first - 0.9 * abs(first), (first, last)
