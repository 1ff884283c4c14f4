"""Simulate SMLM movies: blinking emitters through a PSF (Gaussian, or the cubic spline of a calibration) and a
camera model.

Usage: ``python -m algorithms.simulation simulate --params P.json [--calibration C] --outputs DIR``

Parameters (JSON object; every key optional, units in the names): ``n_frames``; ``frame_shape`` [H, W] px;
``px_size_nm``; ``emitters_per_frame`` or ``density_per_um2`` (emitters on per µm² per frame);
``on_time_frames`` (mean on-time τ, frames; or one per dye); ``z_range_nm`` [low, high]; ``structure`` ("uniform",
{"kind": "filaments", "n_filaments": 10}, {"kind": "positions", "positions_nm": [[x, y, z], ...]});
``flux`` ({"dist": "uniform", "low", "high"} photons per frame fully on; "normal" mean/std; "fixed" value;
per-channel lists allowed); ``n_channels``; ``photon_model`` (independent | biplane | ratiometric) with
``plane_ratios`` or ``transmission`` (dye × channel) and ``n_dyes``; ``focal_offsets_nm`` (per channel,
the z its plane is focused on: biplane); ``background`` ({"low", "high"} or
{"value"} photons/px per frame and channel, ``smooth_amplitude`` in [0, 1), ``smooth_scale_px``);
``camera`` (preset name "smlm-challenge-emccd" | "scmos-typical" | "perfect", or {"preset": ..., overrides}
or all fields: kind, qe, spurious_e, em_gain (null unless EMCCD), read_noise_e, e_per_adu, baseline);
``psf`` ({"kind": "gaussian", "sigma_px", "astig_gamma_nm", "depth_nm", "roi_px"}; ignored with a
calibration); ``transforms`` (3 × 3 per channel, channel → reference, sensor px, x = columns);
``roi_offsets`` ([[row, col], ...] of each channel's frame on the sensor); ``seed``; ``backend``
(auto | cpu | cuda).

Outputs in ``--outputs``: ``frames.tif`` (uint16 ADU, axes T C Y X), ``truth.csv`` (a ThunderSTORM table: units in
the header, frame 1-based) and ``truth.h5`` (a Locus table: frame 0-based) with id, x/y/z nm (x along columns,
the frame's top-left corner at 0), photons in all and per channel, dye,
``preview.png`` and ``simulation.json`` (resolved parameters and counts). Progress: JSON lines on stdout.
Exit 0 on success, 2 with one line on stderr for bad input.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from algorithms.cli import BadInput, atomic_output, atomic_path, job_arguments, progress, read_params


def _find_input(args: argparse.Namespace, slot_name: str) -> Path | None:
    given = getattr(args, slot_name)
    if given is not None:
        return given
    if args.inputs is not None:
        slot = args.inputs / slot_name
        if slot.is_dir():
            files = sorted(p for p in slot.iterdir() if p.is_file())
            if len(files) > 1:
                raise BadInput(f"input slot {slot_name!r} holds {len(files)} files; give one")
            return files[0] if files else None
    return None


def png_bytes(img: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of a 2-D array scaled to its 0.1-99.9 percentiles (stdlib only)."""
    a = np.asarray(img, dtype=np.float64)
    lo, hi = np.percentile(a, [0.1, 99.9])
    g = np.clip((a - lo) / max(hi - lo, 1e-12) * 255.0, 0, 255).astype(np.uint8)
    h, w = g.shape
    raw = b"".join(b"\x00" + g[r].tobytes() for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def write_outputs(result: Any, cfg: Any, outputs: Path, meta: dict[str, Any]) -> None:
    import tifffile

    from algorithms.io.formats import write_table
    from algorithms.io.table import LocTable

    adu = result.adu
    photons = result.photons
    if type(adu).__module__.split(".")[0] == "cupy":
        adu, photons = adu.get(), photons.get()
    frames = np.clip(np.rint(adu), 0, 65535).astype(np.uint16)
    with atomic_path(outputs / "frames.tif") as tmp:
        tifffile.imwrite(tmp, frames, metadata={"axes": "TCYX"})
    progress(0.9, "write", file="frames.tif")
    # Through the table writers, so every reader takes the truth like any other table: truth.csv is a
    # ThunderSTORM table (units in the header, frame 1-based as that format counts), truth.h5 a Locus table.
    truth = result.truth
    units = {"dye": "index", **{name: "photons" for name in truth.columns if name.startswith("photons_c")}}
    truth = LocTable(dict(truth.columns), {**truth.meta, "units": units, "px_size_nm": cfg.px_size_nm})
    write_table(truth, outputs / "truth.csv", fmt="thunderstorm")
    write_table(truth, outputs / "truth.h5", fmt="locus")
    n_prev = min(len(photons), 50)
    tiles = [photons[:n_prev, k].max(axis=0) for k in range(photons.shape[1])]
    with atomic_output(outputs / "preview.png", "wb") as fh:
        fh.write(png_bytes(np.concatenate(tiles, axis=1)))
    with atomic_output(outputs / "simulation.json") as fh:
        json.dump(meta, fh, indent=2, default=lambda o: np.asarray(o).tolist())


def main(argv: list[str] | None = None) -> int:
    from algorithms.io.calibration import CalibrationError, read_calibration, read_transforms
    from algorithms.simulation.render import SimulationConfig, simulate

    parser = argparse.ArgumentParser(
        prog="python -m algorithms.simulation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("entrypoint", choices=["simulate"])
    job_arguments(parser)
    parser.add_argument("--calibration", type=Path, help="SMAP *_3dcal.mat, uiPSF .h5 or bead z-stack .tif")
    parser.add_argument(
        "--transform", type=Path, help="channel → reference affine transforms (.mat with T, or uiPSF .h5)"
    )
    parser.add_argument("--backend", choices=["auto", "cpu", "cuda"], help="overrides params.backend")
    args = parser.parse_args(argv)
    params = read_params(args.params)
    if args.backend:
        params["backend"] = args.backend
    progress(0.0, "setup")
    try:
        cfg = SimulationConfig.from_dict(params)
        cal_path = _find_input(args, "calibration")
        calibration = read_calibration(cal_path) if cal_path is not None else None
        tr_path = _find_input(args, "transform")
        if tr_path is not None and cfg.transforms is None:
            cfg.transforms = read_transforms(tr_path, cfg.n_channels)
        if calibration is not None and "px_size_nm" not in params and calibration.px_size_nm:
            cfg.px_size_nm = float(calibration.px_size_nm[0])
        result = simulate(cfg, calibration, on_progress=progress)
    except CalibrationError as exc:
        raise BadInput(str(exc)) from None
    except (ValueError, TypeError) as exc:
        raise BadInput(f"bad simulation parameters: {exc}".replace("\n", " ")) from None
    meta = {
        "params": {k: v for k, v in vars(cfg).items()},
        "camera": result.camera.to_dict(),
        "calibration": None if calibration is None else calibration.source,
        "emitters": len(result.truth),
        "frames_shape": list(result.adu.shape),
    }
    write_outputs(result, cfg, args.outputs, meta)
    print(f"simulated {cfg.n_frames} frames, {len(result.truth)} emitter-frames", file=sys.stderr)
    progress(1.0, "done", metrics={"emitters": len(result.truth)})
    return 0
