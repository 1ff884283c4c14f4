"""Channel geometry: round trips, identity indicator maps, mirroring/offsets, photon models."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.simulation.geometry import ChannelGeometry, channel_photons, mirror_x, translation


def _geometry() -> ChannelGeometry:
    rot = np.array([[np.cos(0.02), -np.sin(0.02), 3.7], [np.sin(0.02), np.cos(0.02), -1.2], [0, 0, 1]])
    scaled = np.diag([1.01, 0.99, 1.0]) @ translation(-2.5, 4.0)
    return ChannelGeometry([np.eye(3), rot, mirror_x(256.0) @ scaled], [(0, 0), (0, 0), (0, 128)])


def test_round_trip_reference_to_channel_and_back_within_1e_6_px():
    g = _geometry()
    rng = np.random.default_rng(21)
    x, y = rng.uniform(0, 64, 1000), rng.uniform(0, 64, 1000)
    for k in range(g.n_channels):
        xb, yb = g.to_reference(k, *g.to_channel(k, x, y))
        assert np.abs(xb - x).max() < 1e-6 and np.abs(yb - y).max() < 1e-6


def test_identity_transforms_give_zero_indicator_maps():
    maps, scale = ChannelGeometry.identity(3).indicator_maps((32, 48))
    assert maps.shape == (3, 2, 32, 48) and np.all(maps == 0) and scale == 1.0


def test_indicator_maps_hold_scaled_offsets_and_channel_0_is_zero():
    g = ChannelGeometry([np.eye(3), translation(5.0, -3.0)])
    maps, scale = g.indicator_maps((16, 16))
    assert np.all(maps[0] == 0)
    assert np.allclose(maps[1, 0] * scale, -5.0) and np.allclose(maps[1, 1] * scale, 3.0)
    assert np.abs(maps).max() <= 1.0


def test_mirroring_and_roi_offset_place_the_point_where_the_sensor_sees_it():
    # channel 1 is the right half of a 256-px-wide sensor, mirrored: x_sensor_ref = 256 - x_sensor_1
    g = ChannelGeometry([np.eye(3), mirror_x(256.0)], [(0, 0), (0, 128)])
    xk, yk = g.to_channel(1, 10.0, 7.0)
    assert xk == pytest.approx(256.0 - 10.0 - 128.0) and yk == pytest.approx(7.0)


def test_singular_transform_is_rejected():
    with pytest.raises(ValueError, match="singular"):
        ChannelGeometry([np.eye(3), np.diag([1.0, 0.0, 1.0])])


def test_photon_models():
    ph = np.array([100.0, 200.0])
    dye = np.array([0, 1])
    assert np.allclose(
        channel_photons(ph, dye, 2, "biplane", plane_ratios=[1.0, 0.8]), [[100, 80], [200, 160]]
    )
    t = [[0.7, 0.3], [0.2, 0.8]]
    assert np.allclose(channel_photons(ph, dye, 2, "ratiometric", transmission=t), [[70, 30], [40, 160]])
    assert np.allclose(channel_photons(np.array([[1.0, 2.0]]), dye[:1], 2), [[1, 2]])
    with pytest.raises(ValueError, match="transmission"):
        channel_photons(ph, dye, 2, "ratiometric")
