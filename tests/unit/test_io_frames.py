"""TIFF movies: memory-mapped and chunked reading, multi-file movies, metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from algorithms.cli import BadInput
from algorithms.io.frames import open_movie


def _stack(t=12, h=16, w=20, seed=0):
    return np.random.default_rng(seed).integers(0, 4000, (t, h, w), dtype=np.uint16)


@pytest.mark.parametrize("kind", ["plain", "bigtiff", "imagej", "ome"])
def test_uncompressed_tiffs_are_memory_mapped(tmp_path, kind):
    data = _stack()
    path = tmp_path / f"m.{'ome.' if kind == 'ome' else ''}tif"
    kwargs = {"plain": {}, "bigtiff": {"bigtiff": True}, "imagej": {"imagej": True},
              "ome": {"ome": True, "metadata": {"PhysicalSizeX": 0.1, "PhysicalSizeY": 0.1}}}[kind]
    tifffile.imwrite(path, data, **kwargs)
    with open_movie(path) as movie:
        assert movie.shape == data.shape and movie.memory_mapped
        np.testing.assert_array_equal(movie[3], data[3])
        np.testing.assert_array_equal(movie[2:7], data[2:7])
        assert sum(len(b) for _, b in movie.chunks(5)) == len(data)
        if kind == "ome":
            assert movie.metadata.px_size_nm == pytest.approx(100.0)


def test_compressed_tiff_is_read_page_by_page(tmp_path):
    data = _stack()
    tifffile.imwrite(tmp_path / "c.tif", data, compression="zlib")
    with open_movie(tmp_path / "c.tif") as movie:
        assert not movie.memory_mapped
        np.testing.assert_array_equal(np.concatenate([b for _, b in movie.chunks(5)]), data)


def test_several_files_are_one_movie(tmp_path):
    data = _stack(t=10)
    tifffile.imwrite(tmp_path / "a_0.tif", data[:4], photometric="minisblack")
    tifffile.imwrite(tmp_path / "a_1.tif", data[4:], compression="zlib", photometric="minisblack")
    with open_movie(tmp_path) as movie:
        assert len(movie) == 10
        np.testing.assert_array_equal(movie[3:6], data[3:6])
        np.testing.assert_array_equal(movie[-1], data[-1])


def test_micromanager_page_metadata_is_read(tmp_path):
    data = _stack(t=3)
    mm = json.dumps({"Exposure-ms": 30.0, "ROI": "128-64-20-16", "Andor-EMGain": "200", "PixelSizeUm": 0.108})
    with tifffile.TiffWriter(tmp_path / "mm.tif") as tw:
        for frame in data:
            tw.write(frame, extratags=[(51123, "s", 0, mm, True)], contiguous=False)
    with open_movie(tmp_path / "mm.tif") as movie:
        meta = movie.metadata
        assert meta.exposure_ms == 30.0 and meta.em_gain == 200.0 and meta.roi == (128, 64, 20, 16)
        assert meta.px_size_nm == pytest.approx(108.0)
        np.testing.assert_array_equal(movie[1], data[1])  # frames interleaved with metadata still map


def test_imagej_pixel_size(tmp_path):
    tifffile.imwrite(tmp_path / "ij.tif", _stack(t=2), imagej=True, resolution=(1 / 0.16, 1 / 0.16),
                     metadata={"unit": "micron"})
    with open_movie(tmp_path / "ij.tif") as movie:
        assert movie.metadata.px_size_nm == pytest.approx(160.0)


def test_truncated_and_garbage_files_are_bad_input(tmp_path):
    tifffile.imwrite(tmp_path / "full.tif", _stack(t=20))
    raw = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    for name in ("cut.tif", "junk.tif"):
        with pytest.raises(BadInput, match=name):
            open_movie(tmp_path / name)


@pytest.mark.parametrize("kind", ["tifffile", "imagej", "ome"])
def test_declared_channels_are_read_as_channels_of_a_frame(tmp_path, kind):
    data = _stack(t=6 * 2).reshape(6, 2, 16, 20)  # frame t, channel c is image 2t + c
    kwargs = {"tifffile": {"metadata": {"axes": "TCYX"}}, "imagej": {"imagej": True, "metadata": {"axes": "TCYX"}},
              "ome": {"ome": True, "metadata": {"axes": "TCYX"}}}[kind]
    tifffile.imwrite(tmp_path / "m.tif", data, **kwargs)
    with open_movie(tmp_path / "m.tif") as movie:
        assert movie.channels == 2 and len(movie) == 12
        np.testing.assert_array_equal(movie[5], data[2, 1])


def test_channels_stored_one_after_the_other_are_refused_not_taken_for_a_longer_movie(tmp_path):
    tifffile.imwrite(tmp_path / "m.tif", _stack(t=12).reshape(2, 6, 16, 20), metadata={"axes": "CTYX"})
    with pytest.raises(BadInput, match="2 channels stored one after the other"):
        open_movie(tmp_path / "m.tif")
    tifffile.imwrite(tmp_path / "one.tif", _stack(t=4)[:, None], metadata={"axes": "TCYX"})
    with open_movie(tmp_path / "one.tif") as movie:
        assert movie.channels == 1 and len(movie) == 4


@pytest.mark.parametrize("order", ["<", ">"])
def test_picasso_raw_movies_read_memory_mapped_with_their_yaml(tmp_path, order):
    data = _stack(t=7)
    data.astype(np.dtype(np.uint16).newbyteorder(order)).tofile(tmp_path / "m.raw")
    info = {"Byte Order": order, "Data Type": "uint16", "Frames": 7, "Height": 16, "Width": 20, "Pixelsize": 130}
    import yaml

    (tmp_path / "m.yaml").write_text(yaml.safe_dump_all([info, {"Generated by": "Picasso Localize"}]))
    with open_movie(tmp_path / "m.raw") as movie:
        assert movie.shape == data.shape and movie.memory_mapped and movie.metadata.px_size_nm == 130.0
        np.testing.assert_array_equal(movie[2:5], data[2:5])
    (tmp_path / "m.yaml").write_text(yaml.safe_dump_all([{**info, "Frames": 8}]))
    with pytest.raises(BadInput, match="truncated, or the .yaml is another movie's"):
        open_movie(tmp_path / "m.raw")
    (tmp_path / "m.yaml").unlink()
    with pytest.raises(BadInput, match="read with its m.yaml"):
        open_movie(tmp_path / "m.raw")
