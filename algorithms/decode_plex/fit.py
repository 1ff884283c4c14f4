"""Fitting a movie with a trained model: chunked TIFF reading, ADU → photons, channel split, windowing.

A movie is one or more TIFF files read as one stack through a memory map where the file allows it
(page by page otherwise), ``chunk`` frames at a time, so a 50 GB stack is never loaded at once.
Raw frames (ADU) become photons with the inverse of the model file's camera — the simulation engine's
:class:`~algorithms.simulation.camera.Camera` the model was trained with
(``photons = ((ADU - baseline) · e_per_adu / em_gain - spurious) / qe``). Channels come from one camera split into
halves (left/right, channel 1 optionally mirrored and shifted by whole pixels) or from a second movie
(two cameras). The window of frame t is (t-1, t, t+1) with the ends clamped (frame 0 sees 0, 0, 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from algorithms.decode_plex.model import DecodePlexNet, pad_to_multiple
from algorithms.decode_plex.photometry import Photometry
from algorithms.decode_plex.postprocess import extract
from algorithms.io.table import LocTable
from algorithms.simulation.camera import Camera


class Movie:
    """Several TIFF files as one (T, H, W) stack, read lazily through `algorithms.io.frames`.

    That reader checks what a header claims (frame size, byte count) against the file and a sane maximum
    before reading anything, so a hostile or truncated TIFF is a one-line ValueError, never a 20 GB buffer.
    """

    def __init__(self, paths: list[Path]) -> None:
        from algorithms.cli import BadInput
        from algorithms.io.frames import open_movie

        if not paths:
            raise ValueError("no frame files given")
        for p in paths:
            if not Path(p).exists():
                raise ValueError(f"frames file {p} not found")
        try:
            self._movie = open_movie([Path(p) for p in paths])
        except BadInput as exc:
            raise ValueError(str(exc)) from None
        # A file that declares its channels (the simulator's TCYX) holds them interleaved: C images a frame.
        self.channels = self._movie.channels
        self.n_frames = len(self._movie) // self.channels
        self.frame_shape: tuple[int, int] = tuple(self._movie.shape[1:])  # type: ignore[assignment]
        if self.n_frames == 0:
            raise ValueError("the movie has zero frames")

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) as float32: (n, H, W), or (n, C, H, W) for a file with C channels."""
        from algorithms.cli import BadInput

        start, stop = max(start, 0), min(stop, self.n_frames)
        c = self.channels
        if start >= stop:
            return np.zeros((0, *(() if c == 1 else (c,)), *self.frame_shape), np.float32)
        try:
            block = np.asarray(self._movie.block(start * c, stop * c), dtype=np.float32)
        except BadInput as exc:  # a damaged compressed page, found only when decoded
            raise ValueError(str(exc)) from None
        return block if c == 1 else block.reshape(stop - start, c, *self.frame_shape)


@dataclass
class ChannelSplit:
    """How C channels are cut from one camera frame: ``halves`` left/right, channel 1 optionally mirrored."""

    channels: int = 1
    mirror_second: bool = False
    shift_px: tuple[int, int] = (0, 0)  # whole-pixel (x, y) roll of channel 1 after mirroring

    def split(self, frames: np.ndarray, second: np.ndarray | None = None) -> np.ndarray:
        """(n, H, W) [+ (n, H, W) of a second camera] → (n, C, H', W'); (n, C, H, W) from a file that holds
        its channels is already split."""
        if frames.ndim == 4:
            if second is not None:
                raise ValueError("the movie holds its channels already: give no second camera")
            return frames
        if self.channels == 1:
            return frames[:, None]
        if second is not None:
            if second.shape != frames.shape:
                raise ValueError(f"the two cameras' frames differ in shape: {frames.shape} vs {second.shape}")
            a, b = frames, second
        else:
            w = frames.shape[-1]
            if w % 2:
                raise ValueError(f"frames are {w} px wide: a two-halves split needs an even width")
            a, b = frames[..., : w // 2], frames[..., w // 2 :]
        if self.mirror_second:
            b = b[..., ::-1]
        if any(self.shift_px):
            b = np.roll(b, shift=(self.shift_px[1], self.shift_px[0]), axis=(-2, -1))
        return np.stack([a, b], axis=1)


def windows(frames: np.ndarray, window: int, before: np.ndarray | None, after: np.ndarray | None) -> np.ndarray:
    """(n, C, H, W) → (n, T, C, H, W); neighbours beyond the chunk come from ``before``/``after`` (or clamp)."""
    if window == 1:
        return frames[:, None]
    prev = np.concatenate([before if before is not None else frames[:1], frames[:-1]])
    nxt = np.concatenate([frames[1:], after if after is not None else frames[-1:]])
    return np.stack([prev, frames, nxt], axis=1)


def auto_batch_size(net: DecodePlexNet, frame_hw: tuple[int, int], device: torch.device) -> int:
    """Frames per forward pass: from free GPU memory (a third of it), 4 on CPU."""
    if device.type != "cuda":
        return 4
    free, _ = torch.cuda.mem_get_info(device)
    cfg = net.cfg
    # activations dominate: ~ (T·C + 4) feature maps of `features` floats per pixel, ×3 for U-Net levels
    per_frame = frame_hw[0] * frame_hw[1] * cfg.features * (cfg.window * cfg.channels + 4) * 4 * 3
    return int(max(1, min(256, free // 3 // max(per_frame, 1))))


def predict_movie(
    net: DecodePlexNet,
    movie: Movie,
    camera: Camera,
    split: ChannelSplit,
    aux: np.ndarray | None = None,
    second: Movie | None = None,
    prob_threshold: float = 0.5,
    batch_size: int | None = None,
    chunk: int = 256,
    device: torch.device | None = None,
    on_chunk: Any = None,
    photometry: Photometry | None = None,
) -> LocTable:
    """Localizations of every frame of ``movie`` (nm, 0-based frames) before filtering / de-biasing;
    with ``photometry``, each channel's photons measured in the frames at their positions as well."""
    device = device or next(net.parameters()).device
    cfg = net.cfg
    n = movie.n_frames
    if second is not None and second.n_frames != n:
        raise ValueError(f"the two cameras' movies differ in length: {n} vs {second.n_frames}")
    tables: list[LocTable] = []
    aux_t = None if aux is None else torch.from_numpy(np.asarray(aux, np.float32)).to(device)

    def load(lo: int, hi: int) -> np.ndarray:
        a = camera.inverse(movie.read(lo, hi))
        b = None if second is None else camera.inverse(second.read(lo, hi))
        return split.split(a, b)

    with torch.no_grad():
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            frames = load(start, stop)
            before = load(start - 1, start) if start > 0 and cfg.window > 1 else None
            after = load(stop, stop + 1) if stop < n and cfg.window > 1 else None
            win = windows(frames, cfg.window, before, after)
            if win.shape[2] != cfg.channels:
                raise ValueError(f"model expects {cfg.channels} channel(s), frames give {win.shape[2]}")
            h, w = win.shape[-2:]
            bs = batch_size or auto_batch_size(net, (h, w), device)
            for b0 in range(0, len(win), bs):
                x = torch.from_numpy(np.ascontiguousarray(win[b0 : b0 + bs])).to(device)
                x, (h0, w0) = pad_to_multiple(net.prepare(x), 2**cfg.depth)
                a = None
                if cfg.n_aux:
                    if aux_t is None:
                        raise ValueError("a multi-channel model needs the transformation indicator maps")
                    a, _ = pad_to_multiple(aux_t.unsqueeze(0).expand(len(x), -1, -1, -1), 2**cfg.depth)
                out = net(x, a)
                out = {k: v[..., :h0, :w0] for k, v in out.items()}
                table = extract(out, cfg, prob_threshold, frame_offset=start + b0)
                if photometry is not None:
                    centre = win[b0 : b0 + bs, cfg.window // 2]  # (n, C, H, W) photons
                    table = table.with_columns(**photometry.measure(centre, table, frame_offset=start + b0))
                tables.append(table)
            if on_chunk is not None:
                on_chunk(stop / n)
    names = tables[0].columns.keys()
    return LocTable({k: np.concatenate([t[k] for t in tables]) for k in names}, dict(tables[0].meta))


def iter_chunks(n: int, chunk: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, chunk):
        yield start, min(n, start + chunk)
