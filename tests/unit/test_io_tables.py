"""Table formats: real files from Picasso/DECODE/SMAP, round trips, detection and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from algorithms.cli import BadInput
from algorithms.io import picasso, smap
from algorithms.io.formats import DEFAULT_SUFFIX, FORMATS, detect_format, read_table, write_table
from algorithms.io.table import LocTable

REPO = Path(__file__).resolve().parents[2]
REAL = REPO / "tests/data/real"  # files other tools wrote, kept in the repository (README there)


def real_file(name: str) -> Path:
    """A file written by another tool, from tests/data/real (a missing one is a failure, not a skip)."""
    path = REAL / name
    assert path.is_file(), f"real tool file {name} missing from {REAL}"
    return path


def _table(n: int = 200, seed: int = 0, three_d: bool = True) -> LocTable:
    rng = np.random.default_rng(seed)
    cols = {
        "frame": rng.integers(0, 1000, n), "x": rng.uniform(0, 20000, n), "y": rng.uniform(0, 15000, n),
        "photons": rng.uniform(500, 5000, n).astype(np.float32), "bg": rng.uniform(5, 50, n).astype(np.float32),
        "sigma_x": rng.uniform(5, 20, n), "sigma_y": rng.uniform(5, 20, n),
        "psf_sigma_x": rng.uniform(90, 130, n), "psf_sigma_y": rng.uniform(90, 130, n),
        "chi2": rng.uniform(0, 3, n),
    }
    if three_d:
        cols["z"] = rng.uniform(-500, 500, n)
        cols["sigma_z"] = rng.uniform(10, 40, n)
    return LocTable(cols, {"px_size_nm": 110.0, "units": {"chi2": "1"}})


def _assert_same(a: LocTable, b: LocTable, names=None, rtol=1e-6) -> None:
    for name in names or a.columns:
        assert name in b, f"column {name} lost"
        np.testing.assert_allclose(np.asarray(b[name], float), np.asarray(a[name], float), rtol=rtol, atol=1e-6,
                                   err_msg=name)


# ---- real files -------------------------------------------------------------------------------------
def test_the_real_files_travel_with_the_repository():
    # Were they outside the repository, a clone without them would skip the reader tests and pass silently.
    for name in ("testdata_locs.hdf5", "testdata_locs.yaml", "decode_dstorm_data.h5", "smap_dstorm_data.mat"):
        assert (REAL / name).is_file(), name


def test_picasso_real_file_reads_in_nm_with_localize_pixel_size():
    path = real_file("testdata_locs.hdf5")
    table = read_table(path)
    assert len(table) == 564
    assert table.meta["px_size_nm"] == 130.0  # Localize's Pixelsize wins over Simulate's Camera.Pixelsize
    with h5py.File(path) as h5:
        raw = h5["locs"][...]
    # Picasso's pixel centres are at integers; ours at +0.5 px (image corner at 0 nm)
    np.testing.assert_allclose(table["x"], (raw["x"] + 0.5) * 130.0, rtol=1e-6)
    np.testing.assert_allclose(table["y"], (raw["y"] + 0.5) * 130.0, rtol=1e-6)
    np.testing.assert_allclose(table["sigma_x"], raw["lpx"] * 130.0, rtol=1e-6)
    np.testing.assert_array_equal(table["frame"], raw["frame"])  # Picasso frames are already 0-based
    for extra in ("net_gradient", "likelihood", "iterations"):
        np.testing.assert_array_equal(table[extra], raw[extra])
    assert table.meta["width_px"] == 32 and table.meta["height_px"] == 32


def test_picasso_pixel_size_override_wins():
    assert read_table(real_file("testdata_locs.hdf5"), px_size_nm=100.0).meta["px_size_nm"] == 100.0


def test_picasso_yaml_decision_order():
    docs = picasso.parse_yaml_documents("Camera.Pixelsize: 160\nWidth: 32\n---\nPixelsize: 130\n---\nA: b\n")
    assert picasso.pixel_size_from_documents(docs) == 130.0
    assert picasso.pixel_size_from_documents(picasso.parse_yaml_documents("Camera.Pixelsize: 160\n")) == 160.0
    assert picasso.pixel_size_from_documents([]) is None


def test_decode_real_file_swaps_axes_and_scales_each_by_its_pixel_size():
    path = real_file("decode_dstorm_data.h5")
    table = read_table(path)
    with h5py.File(path) as h5:
        xyz = h5["data/xyz"][...]
        frame_ix = h5["data/frame_ix"][...]
    assert len(table) == 96
    # DECODE x (first axis = rows) -> our y with px_size[0] = 127 nm; DECODE y -> our x with 117 nm.
    np.testing.assert_allclose(table["y"], (xyz[:, 0] + 0.5) * 127.0, rtol=1e-6)
    np.testing.assert_allclose(table["x"], (xyz[:, 1] + 0.5) * 117.0, rtol=1e-6)
    np.testing.assert_allclose(table["z"], xyz[:, 2], rtol=1e-6)  # z stays nm
    np.testing.assert_array_equal(table["frame"], frame_ix)
    assert {"photons", "bg", "prob", "sigma_x", "sigma_y", "sigma_z", "photons_sigma", "id"} <= set(table.columns)
    assert table.meta["px_size_xy_nm"] == [117.0, 127.0]


def test_smap_v73_real_file_has_zero_based_frames_and_nm():
    path = real_file("smap_dstorm_data.mat")
    table = read_table(path)
    with h5py.File(path) as h5:
        frame = h5["saveloc/loc/frame"][()].ravel()
        xnm = h5["saveloc/loc/xnm"][()].ravel()
        n_fields = len(h5["saveloc/loc"])
    assert len(table) == 4884
    np.testing.assert_array_equal(table["frame"], frame.astype(int) - 1)
    assert table["frame"].min() == 0
    np.testing.assert_allclose(table["x"], xnm)
    assert len(table.columns) == n_fields  # every field kept (24 of them plus none lost)
    assert table.meta["px_size_nm"] == pytest.approx(104.0)


@pytest.mark.parametrize("name", ["testdata_locs.hdf5", "decode_dstorm_data.h5", "smap_dstorm_data.mat"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_real_files_round_trip_through_every_format(tmp_path, name, fmt):
    table = read_table(real_file(name))
    out = write_table(table, tmp_path / f"t{DEFAULT_SUFFIX[fmt]}", fmt=fmt)
    back = read_table(out[0])
    assert detect_format(out[0]) == fmt
    names = [c for c in ("frame", "x", "y", "z", "photons", "id") if c in table and c in back] if fmt == "challenge" \
        else list(table.columns)
    _assert_same(table, back, names)


# ---- synthetic round trips -------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "challenge"])
@pytest.mark.parametrize("three_d", [True, False])
def test_round_trip_keeps_every_column_and_unit(tmp_path, fmt, three_d):
    table = _table(three_d=three_d)
    out = write_table(table, tmp_path / f"t{DEFAULT_SUFFIX[fmt]}", fmt=fmt)
    back = read_table(out[0])
    assert set(back.columns) == set(table.columns)
    _assert_same(table, back)
    assert back.unit("chi2") == "1"
    assert back.unit("x") == "nm" and back["frame"].dtype == np.int64


def test_challenge_round_trip_keeps_its_columns(tmp_path):
    table = _table()
    out = write_table(table, tmp_path / "loc.csv", fmt="challenge")
    assert out[0].read_text().splitlines()[0] == "Ground-truth,frame,xnano,ynano,znano,intensity"
    back = read_table(out[0])
    _assert_same(table, back, ["frame", "x", "y", "z", "photons"])


def test_challenge_headerless_results_are_one_based(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("1,100.5,200.25,0,1000\n3,300,400,-50,2000\n")
    table = read_table(path)
    np.testing.assert_array_equal(table["frame"], [0, 2])
    np.testing.assert_allclose(table["x"], [100.5, 300])
    np.testing.assert_allclose(table["z"], [0, -50])


def test_picasso_file_written_by_us_has_picasso_fields_and_yaml(tmp_path):
    out = write_table(_table(three_d=False), tmp_path / "ours.hdf5", fmt="picasso")
    assert [p.name for p in out] == ["ours.hdf5", "ours.yaml"]
    with h5py.File(out[0]) as h5:
        dtype = h5["locs"].dtype
    for name, kind in picasso.PICASSO_DTYPES.items():
        if name in ("net_gradient", "likelihood", "iterations", "z"):
            continue
        assert dtype[name] == np.dtype(kind), name
    assert list(dtype.names[:9]) == ["frame", "x", "y", "photons", "sx", "sy", "bg", "lpx", "lpy"]
    docs = picasso.parse_yaml_documents(out[1].read_text())
    assert docs[0]["Width"] >= 1 and docs[0]["Height"] >= 1 and docs[0]["Frames"] >= 1
    assert picasso.pixel_size_from_documents(docs) == 110.0


def test_picasso_rewrite_keeps_history_and_dtypes(tmp_path):
    path = real_file("testdata_locs.hdf5")
    table = read_table(path)
    out = write_table(table, tmp_path / "again.hdf5")
    with h5py.File(out[0]) as h5, h5py.File(path) as orig:
        assert h5["locs"].dtype == orig["locs"].dtype
        np.testing.assert_allclose(h5["locs"]["x"], orig["locs"]["x"], rtol=1e-6)
    text = out[1].read_text()
    assert text.startswith(path.with_suffix(".yaml").read_text().rstrip("\n"))
    assert "Generated by: Locus convert" in text


def test_thunderstorm_with_and_without_quotes(tmp_path):
    rows = "1,2,150.5,250.25,10,1000,20,3,0.5,8.5\n2,5,1.5,2.5,11,1100,21,4,0.6,9\n"
    names = ["id", "frame", "x [nm]", "y [nm]", "sigma [nm]", "intensity [photon]", "offset [photon]",
             "bkgstd [photon]", "chi2", "uncertainty_xy [nm]"]
    for quoted in (True, False):
        path = tmp_path / f"ts{quoted}.csv"
        path.write_text(",".join(f'"{n}"' if quoted else n for n in names) + "\n" + rows)
        assert detect_format(path) == "thunderstorm"
        table = read_table(path)
        np.testing.assert_array_equal(table["frame"], [1, 4])
        np.testing.assert_allclose(table["x"], [150.5, 1.5])
        np.testing.assert_allclose(table["sigma_x"], [8.5, 9])
        np.testing.assert_allclose(table["sigma_y"], [8.5, 9])
        np.testing.assert_allclose(table["photons"], [1000, 1100])
        assert table.unit("bkgstd") == "photon"
        out = write_table(table, tmp_path / f"back{quoted}.csv", fmt="thunderstorm", quote=quoted)
        header = out[0].read_text().splitlines()[0]
        assert {n.strip('"') for n in header.split(",")} == set(names)


def test_thunderstorm_header_a_spreadsheet_wrapped_in_quotes_reads_like_the_original(tmp_path):
    rows = "1,2,150.5,250.25,8.5\n2,5,1.5,2.5,9\n"
    names = ["id", "frame", "x [nm]", "y [nm]", "uncertainty_xy [nm]"]
    plain, wrapped = tmp_path / "plain.csv", tmp_path / "wrapped.csv"
    plain.write_text(",".join(f'"{n}"' for n in names) + "\n" + rows)
    wrapped.write_text('"' + ",".join(f'""{n}""' for n in names) + '"\n' + rows)  # "id,""frame"",...
    assert detect_format(wrapped) == "thunderstorm"
    _assert_same(read_table(plain), read_table(wrapped))


@pytest.mark.parametrize("three_d", [False, True])
def test_thunderstorm_we_write_has_the_columns_picassos_import_reads_and_reads_back_exactly(tmp_path, three_d):
    """picasso.io.import_ts reads frame, x/y [nm], intensity/offset [photon], uncertainty_xy [nm] and sigma [nm]
    (2D) or sigma1/sigma2 [nm] (3D), nothing else; unequal x/y uncertainties went out as uncertainty_x/_y only."""
    table = _table(50, three_d=three_d)
    [path] = write_table(table, tmp_path / "locs.csv", fmt="thunderstorm")
    header = {n.strip('"') for n in path.read_text().splitlines()[0].split(",")}
    need = {"frame", "x [nm]", "y [nm]", "intensity [photon]", "offset [photon]", "uncertainty_xy [nm]"}
    need |= {"z [nm]", "sigma1 [nm]", "sigma2 [nm]"} if three_d else {"sigma [nm]"}
    assert need <= header, need - header
    _assert_same(table, read_table(path))


def test_thunderstorm_px_units_need_pixel_size(tmp_path):
    path = tmp_path / "px.csv"
    path.write_text('"frame","x [px]","y [px]"\n1,2.5,3\n')
    with pytest.raises(BadInput, match=r"px.csv: .*Camera pixel size \(nm\) in the job's form.*--px-size NM"):
        read_table(path)
    table = read_table(path, px_size_nm=100)
    np.testing.assert_allclose(table["x"], [250.0])
    path.write_text('"frame","x [um]","y [um]"\n1,2.5,3\n')
    np.testing.assert_allclose(read_table(path)["y"], [3000.0])
    path.write_text('"frame","x [furlong]","y [nm]"\n1,2.5,3\n')
    with pytest.raises(BadInput, match="unit"):
        read_table(path)


def test_smap_v7_and_v73_written_by_us_read_back(tmp_path):
    table = _table()
    for v73 in (False, True):
        path = tmp_path / f"t{int(v73)}_sml.mat"
        smap.write(table, path, v73=v73)
        assert smap.is_v73(path) == v73
        assert detect_format(path) == "smap"
        back = read_table(path)
        _assert_same(table, back)
    import scipy.io

    mat = scipy.io.loadmat(tmp_path / "t0_sml.mat", squeeze_me=True, struct_as_record=False)
    assert mat["saveloc"].loc.frame.min() == table["frame"].min() + 1  # SMAP frames are 1-based


def test_detection_ignores_misleading_suffix(tmp_path):
    src = write_table(_table(), tmp_path / "t.h5", fmt="decode")[0]
    renamed = tmp_path / "looks_like.csv"
    src.rename(renamed)
    assert detect_format(renamed) == "decode"


@pytest.mark.parametrize("content,problem", [
    (b"", "empty"),
    (b"\x89HDF\r\n\x1a\n" + b"\x00" * 40, "truncated or corrupt"),
    (b"frame,x [nm],y [nm]\n1,2\n", "malformed|values"),
    (b"frame,x [nm],y [nm]\n1,abc,3\n", "malformed"),
    (b"a,b\n1,2\n", "neither ThunderSTORM"),
    (b"\x00\x01\x02\xff" * 10, "binary"),
])
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "broken.csv"
    path.write_bytes(content)
    with pytest.raises(BadInput, match=problem) as info:
        read_table(path)
    assert "broken.csv" in str(info.value) and "\n" not in str(info.value)


def test_truncated_hdf5_table_is_bad_input(tmp_path):
    full = write_table(_table(2000), tmp_path / "full.h5", fmt="locus")[0]
    cut = tmp_path / "cut.h5"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(BadInput, match="cut.h5"):
        read_table(cut)


def test_missing_columns_are_named(tmp_path):
    path = tmp_path / "nox.hdf5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("locs", data=np.zeros(3, dtype=[("frame", "u4"), ("x", "f4")]))
    with pytest.raises(BadInput, match="lacks field.*y"):
        read_table(path, px_size_nm=100)


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "algorithms.io", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_convert_cli_and_exit_code_2_without_pixel_size(tmp_path):
    src = write_table(_table(), tmp_path / "in.h5", fmt="locus")[0]
    out = _cli("convert", str(src), str(tmp_path / "out.csv"))
    assert out.returncode == 0, out.stderr
    assert '"progress"' in out.stdout
    csv = tmp_path / "nopx.csv"
    csv.write_text("frame,x [px],y [px]\n1,2,3\n")
    bad = _cli("convert", str(csv), str(tmp_path / "never.h5"))
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "--px-size" in bad.stderr and "nopx.csv" in bad.stderr
    assert not (tmp_path / "never.h5").exists()
    ok = _cli("convert", str(csv), str(tmp_path / "ok.hdf5"), "--px-size", "100")
    assert ok.returncode == 0, ok.stderr
    assert read_table(tmp_path / "ok.hdf5")["x"][0] == pytest.approx(200.0)


def test_convert_registry_form(tmp_path):
    (tmp_path / "in/table").mkdir(parents=True)
    write_table(_table(), tmp_path / "in/table/run1.hdf5", fmt="picasso")
    (tmp_path / "p.json").write_text('{"to": "smap"}')
    out = _cli("convert", "--inputs", str(tmp_path / "in"), "--outputs", str(tmp_path / "out"),
               "--params", str(tmp_path / "p.json"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out/run1_sml.mat").is_file() and (tmp_path / "out/convert.json").is_file()


def test_failed_write_leaves_no_partial_output(tmp_path):
    table = _table()
    table.meta.pop("px_size_nm")
    with pytest.raises(BadInput):
        write_table(table, tmp_path / "x.hdf5", fmt="picasso")
    assert list(tmp_path.iterdir()) == []


def test_decode_csv_layout_swaps_axes_like_the_h5(tmp_path):
    path = tmp_path / "emitters.csv"
    path.write_text('# DECODE EmitterSet\n# {"version": "0.10.0"}\n# {"xy_unit": "px", "px_size": [100.0, 120.0]}\n'
                    "x,y,z,phot,frame_ix,id,prob,bg,x_sig,y_sig,z_sig\n"
                    "2.0,3.0,-50.0,1000.0,4,7,0.9,10.0,0.1,0.2,30.0\n")
    assert detect_format(path) == "decode_csv"
    table = read_table(path)
    assert table["y"][0] == pytest.approx(250.0) and table["x"][0] == pytest.approx(420.0)
    assert table["sigma_y"][0] == pytest.approx(10.0) and table["sigma_x"][0] == pytest.approx(24.0)
    assert table["frame"][0] == 4 and table["z"][0] == -50.0 and table["photons"][0] == 1000.0


@pytest.mark.parametrize("fmt", [*FORMATS, "smap73"])
@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.97])
def test_truncated_files_of_every_format_are_bad_input(tmp_path, fmt, fraction):
    table = _table(1500)
    if fmt == "smap73":
        path = tmp_path / "t_sml.mat"
        smap.write(table, path, v73=True)
    else:
        path = write_table(table, tmp_path / f"t{DEFAULT_SUFFIX[fmt]}", fmt=fmt)[0]
    raw = path.read_bytes()
    cut = int(len(raw) * fraction)
    if raw[cut - 1:cut] == b"\n":  # a text table cut exactly after a row is a valid shorter table
        cut -= 1
    broken = tmp_path / f"cut{path.name}"
    broken.write_bytes(raw[:cut])
    if fmt == "picasso":
        broken.with_suffix(".yaml").write_text(path.with_suffix(".yaml").read_text())
    with pytest.raises(BadInput, match=broken.name):
        read_table(broken)


def test_picasso_yaml_we_write_is_valid_yaml_with_picasso_keys(tmp_path):
    yaml = pytest.importorskip("yaml")
    table = _table(three_d=False)
    table.meta["units"]["odd"] = 'a "quoted": unit'
    table = table.with_columns(odd=np.ones(len(table)))
    out = write_table(table, tmp_path / "p.hdf5", fmt="picasso")
    docs = list(yaml.safe_load_all(out[1].read_text()))
    assert {"Width", "Height", "Frames", "Byte Order", "Data Type"} <= set(docs[0])
    assert docs[-1]["Pixelsize"] == 110.0
    assert json.loads(docs[-1]["Locus units"])["odd"] == 'a "quoted": unit'
    assert read_table(out[0]).unit("odd") == 'a "quoted": unit'


def test_pixel_centre_means_the_same_nm_in_every_format(tmp_path):
    # The centre of camera pixel (row 3, column 5) at 100 nm/px is (550, 350) nm with the image corner at 0.
    pic = tmp_path / "c.hdf5"
    with h5py.File(pic, "w") as h5:
        h5.create_dataset("locs", data=np.array([(0, 5.0, 3.0)], dtype=[("frame", "u4"), ("x", "f4"), ("y", "f4")]))
    pic.with_suffix(".yaml").write_text("Width: 32\nHeight: 32\nFrames: 1\n---\nPixelsize: 100\n")
    dec = tmp_path / "c.h5"
    with h5py.File(dec, "w") as h5:
        h5.create_dataset("data/xyz", data=np.array([[3.0, 5.0, 0.0]], np.float32))  # DECODE x = row
        h5.create_dataset("data/frame_ix", data=np.array([0]))
        h5.create_group("meta").attrs.update({"xy_unit": "px", "px_size": np.array([100.0, 100.0])})
    ts = tmp_path / "c.csv"
    ts.write_text('"frame","x [px]","y [px]"\n1,5.5,3.5\n')
    for path, kwargs in ((pic, {}), (dec, {}), (ts, {"px_size_nm": 100.0})):
        table = read_table(path, **kwargs)
        assert (table["x"][0], table["y"][0]) == pytest.approx((550.0, 350.0)), path.name
