"""The pre-trained model shipped with Locus, and a small movie simulated for its conditions (the demo's input).

``models/generic-2d-emccd.pt`` is a DECODE-Plex model trained with the project's own ``train`` entrypoint for
a generic single-channel 2D EMCCD setup; ``models/generic-2d-emccd.json`` beside it holds its training
parameters, code version, training summary and validation metrics (``bench/bundled_model.py`` writes them), and
``models/generic-2d-emccd.params.json`` is the exact ``--params`` file it was trained with. See
docs/decode_plex.md, "Bundled model".
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent / "models"
GENERIC_2D_EMCCD = MODELS_DIR / "generic-2d-emccd.pt"


def sidecar_path(model: Path = GENERIC_2D_EMCCD) -> Path:
    return model.with_suffix(".json")


def params_path(model: Path = GENERIC_2D_EMCCD) -> Path:
    return model.with_suffix(".params.json")


def training_params(model: Path = GENERIC_2D_EMCCD) -> dict[str, Any]:
    """The ``--params`` the model was trained with (photons, background in photons; px_size_nm; psf_sigma_px)."""
    return json.loads(params_path(model).read_text())


def demo_movie(
    n_frames: int = 1000,
    frame_px: int = 64,
    seed: int = 7,
    model: Path = GENERIC_2D_EMCCD,
) -> tuple[bytes, Any]:
    """A movie for the bundled model's conditions: ``(TIFF bytes, ground truth)``.

    Blinking emitters on microtubule-like filaments (so the rendered image shows a structure), ``frame_px``²
    pixels of the model's pixel size, the model's Gaussian PSF and camera preset, photons and background inside
    the model's training ranges. The TIFF holds uint16 ADU, axes T C Y X, as ``simulation simulate`` writes it;
    the truth is a LocTable in nm. The simulator has no stage drift, so neither has this movie.
    """
    import tifffile

    from algorithms.simulation.render import SimulationConfig, simulate

    p = training_params(model)
    lo, hi = (float(v) for v in p["photons"])
    blo, bhi = (float(v) for v in p["background"])
    cfg = SimulationConfig(
        n_frames=n_frames, frame_shape=(frame_px, frame_px), px_size_nm=float(p["px_size_nm"]),
        density_per_um2=0.15, on_time_frames=2.0, z_range_nm=(0.0, 0.0),
        structure={"kind": "filaments", "n_filaments": 6},
        # dSTORM-like: bright blinks well inside the training range, on a moderate background
        flux={"dist": "uniform", "low": max(lo, 1500.0), "high": min(hi, 5000.0)},
        background={"low": max(blo, 30.0), "high": min(bhi, 60.0)},
        camera=p["camera"], psf={"kind": "gaussian", "sigma_px": float(p["psf_sigma_px"])},
        seed=seed, backend="cpu",
    )
    result = simulate(cfg)
    frames = np.clip(np.rint(result.adu), 0, 65535).astype(np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, frames, metadata={"axes": "TCYX"})
    return buf.getvalue(), result.truth
