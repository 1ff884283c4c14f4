"""PSF calibration readers and writers: SMAP ``*_3dcal.mat`` (MATLAB v7 and v7.3), uiPSF ``.h5`` and bead
z-stack TIFFs, into one :class:`Calibration` bundle of :class:`~algorithms.simulation.psf.SplinePSF`.

Coordinate mapping (design §6: x along columns, y along rows):

* SMAP stores ``cspline.coeff`` as ``(Nx, Ny, Nz, 64)`` in MATLAB order where SMAP's *x is the first
  array axis, i.e. image rows*. Our :class:`SplinePSF` keeps axis 0 = rows = our y, so the array is taken
  as is (MATLAB ``coeff(i, j, k, m)`` = our ``coeff[i-1, j-1, k-1, m-1]``); the 64 coefficients use SMAP's
  order ``m = p_axis0 + 4 p_axis1 + 16 p_z``. The PSF centre is ``ref = (x0 - 1, x0 - 1, z0)`` in spline
  nodes (``x0`` is 1-based, as DECODE reads it) and ``cspline.dz`` is nm per z node.
  v7.3 files are HDF5 whose datasets hold the MATLAB array transposed; they are transposed back here.
* uiPSF ``.h5`` holds the voxel PSF ``res/I_model`` (or ``res/channel<k>/I_model``) as ``(Nz, Ny, Nx)``
  with Ny along rows, and a JSON attribute ``params`` with ``pixelsize_x``/``pixelsize_z`` in µm. The stack
  is turned into coefficients by :func:`~algorithms.simulation.psf.spline_from_stack` with its centre at
  the central voxel. Affine transforms are read from ``res/T`` (channel k → reference, 3 x 3, when present).
* A bead z-stack TIFF is ``(Nz, Ny, Nx)``, focus at the central slice unless given, background removed by
  subtracting the stack's lowest percentile.

Every problem with a file raises :class:`CalibrationError` naming the file and the problem in one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from algorithms.simulation.psf import SplinePSF, spline_from_stack


class CalibrationError(ValueError):
    """A calibration file cannot be used; the message names the file and the problem."""


@dataclass
class Calibration:
    """Per-channel spline PSFs, affine transforms channel → reference (3 x 3, pixels) and pixel size."""

    psfs: list[SplinePSF]
    transforms: list[np.ndarray] = field(default_factory=list)
    px_size_nm: tuple[float, float] | None = None
    stacks: list[np.ndarray | None] = field(default_factory=list)  # stored voxel PSFs (z, y, x) when present
    source: str = ""

    @property
    def n_channels(self) -> int:
        return len(self.psfs)


def read_calibration(path: str | Path, **kwargs: Any) -> Calibration:
    """Read a calibration by suffix: ``.mat`` (SMAP), ``.h5``/``.hdf5`` (uiPSF), ``.tif``/``.tiff`` (beads)."""
    p = Path(path)
    if not p.is_file():
        raise CalibrationError(f"{p.name}: calibration file not found")
    suffix = p.suffix.lower()
    if suffix == ".mat":
        return read_smap_3dcal(p)
    if suffix in {".h5", ".hdf5"}:
        return read_uipsf_h5(p)
    if suffix in {".tif", ".tiff"}:
        return read_bead_stack(p, **kwargs)
    raise CalibrationError(f"{p.name}: unknown calibration format {suffix!r} (use .mat, .h5 or .tif)")


# --------------------------------------------------------------------------------------------------- SMAP


def _is_hdf5(path: Path) -> bool:
    import h5py

    try:
        return bool(h5py.is_hdf5(path))
    except OSError:
        return False


def read_smap_3dcal(path: str | Path) -> Calibration:
    """SMAP ``*_3dcal.mat``: ``SXY`` (one channel, or an array of channels) or ``SXY_g`` (global multi-channel
    fit, ``cspline.coeff`` a cell of one array per channel)."""
    p = Path(path)
    try:
        if _is_hdf5(p):
            raw = _smap_from_h5(p)
        else:
            raw = _smap_from_v7(p)
    except CalibrationError:
        raise
    except Exception as exc:  # truncated or not a MATLAB file at all
        raise CalibrationError(
            f"{p.name}: not a readable MATLAB .mat file ({type(exc).__name__}: {exc})"
        ) from None
    psfs, stacks = [], []
    for ch, cs in enumerate(raw):
        if "coeff" not in cs:
            raise CalibrationError(
                f"{p.name}: channel {ch} has no cspline.coeff (is this a 3D spline calibration?)"
            )
        coeff = np.asarray(cs["coeff"], dtype=np.float32)
        if coeff.ndim != 4 or coeff.shape[3] != 64:
            raise CalibrationError(
                f"{p.name}: cspline.coeff has shape {coeff.shape}, expected (Nx, Ny, Nz, 64)"
            )
        try:
            x0 = float(np.ravel(cs["x0"])[0])
            z0 = float(np.ravel(cs["z0"])[0])
            dz = float(np.ravel(cs["dz"])[0])
        except KeyError as exc:
            raise CalibrationError(f"{p.name}: cspline lacks field {exc.args[0]}") from None
        if not dz > 0:
            raise CalibrationError(f"{p.name}: cspline.dz is {dz}, must be positive nm")
        psfs.append(SplinePSF(coeff, (x0 - 1.0, x0 - 1.0, z0), dz, {"source": p.name, "channel": ch}))
        stack = cs.get("PSF")
        stack = None if stack is None or np.size(stack) == 0 else np.asarray(stack, dtype=np.float64)
        stacks.append(None if stack is None else stack.transpose(2, 0, 1))
    transforms = [np.eye(3) for _ in psfs]
    return Calibration(psfs, transforms, None, stacks, p.name)


def _struct_to_dict(s: Any) -> dict[str, Any]:
    return {name: getattr(s, name) for name in s._fieldnames}


def _smap_from_v7(p: Path) -> list[dict[str, Any]]:
    import scipy.io

    m = scipy.io.loadmat(p, squeeze_me=True, struct_as_record=False)
    if "SXY_g" in m:
        sxy = np.ravel(np.asarray(m["SXY_g"], dtype=object))[0]
        cs = _struct_to_dict(sxy.cspline)
        if "coeff" not in cs:
            return [cs]
        coeffs = cs["coeff"]
        coeffs = list(coeffs) if isinstance(coeffs, np.ndarray) and coeffs.dtype == object else [coeffs]
        return [{**cs, "coeff": c} for c in coeffs]
    if "SXY" not in m:
        raise CalibrationError(f"{p.name}: no SXY or SXY_g variable (is this a SMAP 3dcal file?)")
    out = []
    for sxy in np.ravel(np.asarray(m["SXY"], dtype=object)):
        if not hasattr(sxy, "cspline"):
            raise CalibrationError(f"{p.name}: SXY has no cspline (a calibration without a cubic spline)")
        cs = _struct_to_dict(sxy.cspline)
        c = cs.get("coeff")
        if isinstance(c, np.ndarray) and c.dtype == object:
            cs["coeff"] = c.ravel()[0]
        if hasattr(sxy, "PSF"):
            cs["PSF"] = (
                sxy.PSF.ravel()[0] if isinstance(sxy.PSF, np.ndarray) and sxy.PSF.dtype == object else sxy.PSF
            )
        out.append(cs)
    return out


def _h5_value(f: Any, node: Any) -> Any:
    """A MATLAB v7.3 value: numeric arrays transposed back to MATLAB order, cells as lists, structs as dicts."""
    import h5py

    if isinstance(node, h5py.Group):
        return {k: _h5_value(f, node[k]) for k in node}
    data = node[()]
    if node.dtype == h5py.ref_dtype:
        items = [_h5_value(f, f[r]) for r in np.ravel(data.T)]
        return items
    return np.asarray(data).T


def _smap_from_h5(p: Path) -> list[dict[str, Any]]:
    import h5py

    with h5py.File(p, "r") as f:
        key = "SXY_g" if "SXY_g" in f else "SXY" if "SXY" in f else None
        if key is None:
            raise CalibrationError(f"{p.name}: no SXY or SXY_g variable (is this a SMAP 3dcal file?)")
        node = f[key]
        structs: list[dict[str, Any]] = []
        if isinstance(node, h5py.Group):
            d = _h5_value(f, node)
            if isinstance(d.get("cspline"), list):
                # MATLAB's struct array (1 x N): a group whose fields are reference datasets, one per element
                n = len(d["cspline"])
                structs.extend(
                    {k: (v[i] if isinstance(v, list) and len(v) == n else v) for k, v in d.items()}
                    for i in range(n)
                )
            else:
                structs.append(d)
        else:  # a dataset of references to struct groups
            structs.extend(_h5_value(f, node))
    out = []
    for s in structs:
        if "cspline" not in s:
            raise CalibrationError(f"{p.name}: {key} has no cspline (a calibration without a cubic spline)")
        cs = dict(s["cspline"])
        coeffs = cs.get("coeff")
        psf = s.get("PSF")
        if isinstance(psf, list):
            psf = psf[0]
        if isinstance(coeffs, list):
            if key == "SXY_g":
                out.extend({**cs, "coeff": c} for c in coeffs)
                continue
            cs["coeff"] = coeffs[0]
        if psf is not None:
            cs["PSF"] = psf
        out.append(cs)
    return out


def write_smap_3dcal(
    path: str | Path,
    psfs: list[SplinePSF],
    stacks: list[np.ndarray] | None = None,
    version: str = "7",
    multichannel: bool = False,
) -> None:
    """Write spline PSFs in SMAP's ``*_3dcal.mat`` layout (for tests and for exchange with SMAP/DECODE).

    ``version`` '7' writes through scipy, '7.3' writes HDF5 with MATLAB's userblock, transposed datasets,
    structs as groups and cells as reference datasets. ``multichannel`` writes ``SXY_g`` with a cell of
    coefficients; otherwise ``SXY`` (a struct array when there are several channels).
    """
    p = Path(path)
    fields = []
    for k, psf in enumerate(psfs):
        cs = {
            "coeff": psf.coeff.astype(np.float32),
            "x0": float(psf.ref[0] + 1.0),
            "z0": float(psf.ref[2]),
            "dz": float(psf.dz_nm),
        }
        st = None if stacks is None else np.asarray(stacks[k], dtype=np.float64).transpose(1, 2, 0)
        fields.append((cs, st))
    if version == "7":
        import scipy.io

        if multichannel:
            cs = dict(fields[0][0])
            cell = np.empty((1, len(fields)), dtype=object)
            for k, (c, _) in enumerate(fields):
                cell[0, k] = c["coeff"]
            cs["coeff"] = cell
            scipy.io.savemat(p, {"SXY_g": {"cspline": cs}}, do_compression=True)
            return
        arr = np.empty((1, len(fields)), dtype=[("cspline", object), ("PSF", object)])
        for k, (c, st) in enumerate(fields):
            cell = np.empty((1, 1), dtype=object)
            cell[0, 0] = c["coeff"]
            arr[0, k] = ({**c, "coeff": cell}, st if st is not None else np.zeros((0, 0)))
        scipy.io.savemat(p, {"SXY": arr}, do_compression=True)
        return
    if version != "7.3":
        raise ValueError(f"MATLAB version must be '7' or '7.3', not {version!r}")
    _write_v73(p, fields, multichannel)


def _write_v73(p: Path, fields: list[tuple[dict[str, Any], np.ndarray | None]], multichannel: bool) -> None:
    import h5py

    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: locus. HDF5 schema 1.00 ."
    with h5py.File(p, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        counter = [0]

        def num(group: Any, name: str, value: Any) -> Any:
            a = np.asarray(value, dtype=np.float64 if np.asarray(value).dtype != np.float32 else np.float32)
            a = np.atleast_2d(a) if a.ndim < 2 else a
            ds = group.create_dataset(name, data=a.T)
            ds.attrs["MATLAB_class"] = np.bytes_("single" if a.dtype == np.float32 else "double")
            return ds

        def cell(group: Any, name: str, values: list[Any]) -> None:
            rs = []
            for v in values:
                counter[0] += 1
                rs.append(num(refs, f"r{counter[0]}", v).ref)
            ds = group.create_dataset(name, data=np.array(rs, dtype=h5py.ref_dtype).reshape(len(rs), 1))
            ds.attrs["MATLAB_class"] = np.bytes_("cell")

        def struct(group: Any, cs: dict[str, Any], coeffs: list[np.ndarray], st: np.ndarray | None) -> None:
            group.attrs["MATLAB_class"] = np.bytes_("struct")
            g = group.create_group("cspline")
            g.attrs["MATLAB_class"] = np.bytes_("struct")
            cell(g, "coeff", coeffs)
            for k in ("x0", "z0", "dz"):
                num(g, k, cs[k])
            if st is not None:
                num(group, "PSF", st)

        if multichannel:
            struct(f.create_group("SXY_g"), fields[0][0], [c["coeff"] for c, _ in fields], None)
        elif len(fields) == 1:
            struct(f.create_group("SXY"), fields[0][0], [fields[0][0]["coeff"]], fields[0][1])
        else:  # MATLAB's layout of a 1 x N struct array: one reference dataset per field
            top = f.create_group("SXY")
            top.attrs["MATLAB_class"] = np.bytes_("struct")
            cs_refs, psf_refs = [], []
            for k, (c, st) in enumerate(fields):
                g = refs.create_group(f"cs{k}")
                g.attrs["MATLAB_class"] = np.bytes_("struct")
                cell(g, "coeff", [c["coeff"]])
                for name in ("x0", "z0", "dz"):
                    num(g, name, c[name])
                cs_refs.append(g.ref)
                counter[0] += 1
                psf_refs.append(num(refs, f"r{counter[0]}", st if st is not None else np.zeros((0, 0))).ref)
            for name, rs in (("cspline", cs_refs), ("PSF", psf_refs)):
                ds = top.create_dataset(name, data=np.array(rs, dtype=h5py.ref_dtype).reshape(len(rs), 1))
                ds.attrs["MATLAB_class"] = np.bytes_("cell")
    with open(p, "r+b") as fh:
        fh.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


# -------------------------------------------------------------------------------------------------- uiPSF


def read_uipsf_h5(path: str | Path) -> Calibration:
    """uiPSF result ``.h5``: voxel PSF(s) → spline coefficients; pixel size and z step from ``params``."""
    import h5py

    p = Path(path)
    try:
        with h5py.File(p, "r") as f:
            if "res" not in f:
                raise CalibrationError(f"{p.name}: no 'res' group (is this a uiPSF result file?)")
            res = f["res"]
            if "I_model" in res:
                stacks = [np.asarray(res["I_model"][()], dtype=np.float64)]
            else:
                names = sorted((k for k in res if k.startswith("channel")), key=lambda k: int(k[7:] or 0))
                stacks = [
                    np.asarray(res[k]["I_model"][()], dtype=np.float64) for k in names if "I_model" in res[k]
                ]
            if not stacks:
                raise CalibrationError(f"{p.name}: no res/I_model voxel PSF in the file")
            params = json.loads(f.attrs["params"]) if "params" in f.attrs else {}
            t = np.asarray(res["T"][()], dtype=np.float64) if "T" in res else None
    except CalibrationError:
        raise
    except Exception as exc:
        raise CalibrationError(f"{p.name}: not a readable HDF5 file ({type(exc).__name__}: {exc})") from None
    dz_nm = float(params.get("pixelsize_z", 0.05)) * 1000.0
    px = params.get("pixelsize_x")
    py = params.get("pixelsize_y", px)
    psfs = []
    for k, st in enumerate(stacks):
        if st.ndim != 3:
            raise CalibrationError(
                f"{p.name}: I_model of channel {k} has shape {st.shape}, expected (z, y, x)"
            )
        psf = spline_from_stack(st, dz_nm, normalise=False)
        psf.meta.update({"source": p.name, "channel": k})
        psfs.append(psf)
    transforms = [np.eye(3) for _ in psfs]
    if t is not None and len(psfs) > 1:
        t = t.reshape(-1, 3, 3)
        offset = len(t) - (len(psfs) - 1)  # T may or may not include the reference channel
        for k in range(1, len(psfs)):
            transforms[k] = t[k - 1 + offset]
    size = (float(px) * 1000.0, float(py) * 1000.0) if px else None
    return Calibration(psfs, transforms, size, list(stacks), p.name)


def write_uipsf_h5(
    path: str | Path,
    stacks: list[np.ndarray],
    px_size_nm: float,
    dz_nm: float,
    transforms: list[np.ndarray] | None = None,
) -> None:
    """Write voxel PSFs in uiPSF's result layout (tests; exchange)."""
    import h5py

    with h5py.File(path, "w") as f:
        res = f.create_group("res")
        if len(stacks) == 1:
            res.create_dataset("I_model", data=np.asarray(stacks[0], dtype=np.float32))
        else:
            for k, st in enumerate(stacks):
                res.create_group(f"channel{k}").create_dataset(
                    "I_model", data=np.asarray(st, dtype=np.float32)
                )
        if transforms is not None and len(transforms) > 1:
            res.create_dataset("T", data=np.stack([np.asarray(t, dtype=np.float64) for t in transforms[1:]]))
        f.attrs["params"] = json.dumps(
            {
                "pixelsize_x": px_size_nm / 1000.0,
                "pixelsize_y": px_size_nm / 1000.0,
                "pixelsize_z": dz_nm / 1000.0,
            }
        )


# ------------------------------------------------------------------------------------------------ beads


MAX_BEAD_STACK_VOXELS = 1024 * 512 * 512  # 2 GB as float64: far above a real bead z-stack


def _refuse_unless_one_bead(path: Path, stack: np.ndarray) -> None:
    """A bead stack's signal sits around one spot; a blinking movie's is spread over the frame. Without this
    a movie given as a calibration would become a meaningless "PSF" without a word."""
    projection = np.clip(stack.sum(axis=0) - np.median(stack.sum(axis=0)), 0.0, None)
    total = projection.sum()
    if total <= 0:
        raise CalibrationError(f"{path.name}: a bead stack has a bright bead; this stack has no signal above "
                               "its background")
    ny, nx = projection.shape
    row, col = np.unravel_index(int(np.argmax(projection)), projection.shape)
    radius = max(4.0, min(ny, nx) / 4)
    rr, cc = np.ogrid[:ny, :nx]
    near = projection[(rr - row) ** 2 + (cc - col) ** 2 <= radius**2].sum() / total
    if near < 0.5:
        raise CalibrationError(
            f"{path.name}: does not look like a bead z-stack (one bead, centred): only {near:.0%} of its signal "
            f"lies within {radius:.0f} px of its brightest spot — is it a movie of blinking emitters?")


def read_bead_stack(path: str | Path, dz_nm: float = 50.0, focus_index: float | None = None) -> Calibration:
    """A bead z-stack TIFF ``(Nz, Ny, Nx)`` (one bead, centred) → spline PSF normalised at focus."""
    from algorithms.cli import BadInput
    from algorithms.io.frames import open_movie

    p = Path(path)
    # Through the movie reader: it checks the declared frame size against the file's size and a sane maximum
    # before any byte is read (a header claiming 100 000² px must not allocate 20 GB), and keeps tifffile's
    # own log lines off stderr.
    try:
        with open_movie(p) as movie:
            voxels = int(np.prod(movie.shape))
            if voxels > MAX_BEAD_STACK_VOXELS:
                raise CalibrationError(f"{p.name}: a bead stack of {' × '.join(map(str, movie.shape))} voxels is "
                                       f"larger than any bead stack (at most {MAX_BEAD_STACK_VOXELS:,})")
            st = np.asarray(movie[:], dtype=np.float64)
    except BadInput as exc:
        raise CalibrationError(str(exc).removeprefix("error: ")) from None
    if st.ndim != 3 or min(st.shape) < 4:
        raise CalibrationError(
            f"{p.name}: a bead stack must be (z, y, x) with at least 4 per axis, not {st.shape}"
        )
    _refuse_unless_one_bead(p, st)
    st = np.clip(st - np.percentile(st, 1.0), 0.0, None)
    psf = spline_from_stack(st, dz_nm, focus_index=focus_index, normalise=True)
    psf.meta.update({"source": p.name})
    return Calibration([psf], [np.eye(3)], None, [st], p.name)


# ------------------------------------------------------------------------------------------- transforms


def read_transforms(path: str | Path, n_channels: int | None = None) -> list[np.ndarray]:
    """Affine transforms channel k → reference (3 × 3, sensor px, acting on ``[x, y, 1]``), channel 0 the
    identity. Reads uiPSF ``.h5`` (``res/T``) and ``.mat``/``.h5`` files holding a numeric ``(3, 3)``,
    ``(N, 3, 3)`` array (variable ``T``, ``transform`` or ``trafo``). SMAP's ``_trafo.mat`` stores a MATLAB
    object, which cannot be read outside MATLAB: export its matrix to such a variable."""
    import h5py

    p = Path(path)
    if not p.is_file():
        raise CalibrationError(f"{p.name}: transform file not found")
    names = ("T", "transform", "trafo")
    arr = None
    try:
        if _is_hdf5(p):
            with h5py.File(p, "r") as f:
                if "res" in f and "T" in f["res"]:
                    arr = np.asarray(f["res/T"][()], dtype=np.float64)
                else:
                    for n in names:
                        if n in f and isinstance(f[n], h5py.Dataset) and f[n].dtype.kind == "f":
                            arr = np.asarray(f[n][()], dtype=np.float64).T  # MATLAB v7.3 order
                            break
        else:
            import scipy.io

            m = scipy.io.loadmat(p, squeeze_me=True)
            for n in names:
                if n in m and isinstance(m[n], np.ndarray) and m[n].dtype.kind == "f":
                    arr = np.asarray(m[n], dtype=np.float64)
                    break
    except CalibrationError:
        raise
    except Exception as exc:
        raise CalibrationError(
            f"{p.name}: not a readable transform file ({type(exc).__name__}: {exc})"
        ) from None
    if arr is None:
        raise CalibrationError(
            f"{p.name}: no numeric transform (res/T, T, transform or trafo); a SMAP _trafo.mat holds a MATLAB "
            "object that cannot be read outside MATLAB, so export its 3 x 3 matrix as T"
        )
    if arr.ndim == 3 and arr.shape[:2] == (3, 3) and arr.shape[2] != 3:
        arr = arr.transpose(2, 0, 1)  # (3, 3, N) from MATLAB
    mats = arr.reshape(-1, 3, 3) if arr.size % 9 == 0 and arr.shape[-2:] == (3, 3) else None
    if mats is None:
        raise CalibrationError(f"{p.name}: transform has shape {arr.shape}, expected (3, 3) or (N, 3, 3)")
    out = [np.eye(3), *mats]
    if n_channels is not None:
        if len(mats) == n_channels:  # the file includes the reference channel
            out = [np.asarray(m) for m in mats]
        if len(out) != n_channels:
            raise CalibrationError(f"{p.name}: {len(mats)} transform(s) for {n_channels} channels")
    return out
