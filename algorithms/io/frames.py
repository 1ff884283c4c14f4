"""Raw camera movies from TIFF / OME-TIFF / BigTIFF files and Picasso raw movies, read lazily.

A `Movie` is one or several TIFF files seen as one stack of 2D frames (T, H, W) in the camera's own dtype
(ADU; the camera model turns them into photons later, design §6). Nothing is loaded whole:

* uncompressed frames are **memory-mapped** (one read-only map per file, each frame a view at its offset,
  so Micro-Manager files with metadata between the images work too, and ImageJ hyperstacks over 4 GB whose
  frames follow the first IFD without IFDs of their own);
* compressed or tiled frames are decoded one page at a time (`chunks()` yields blocks of frames).

Metadata read when present: pixel size (ImageJ resolution + unit, OME PhysicalSizeX, Micro-Manager
PixelSize_um), Micro-Manager ROI (x, y, width, height in camera pixels), EM gain and exposure (ms).
Each file contributes its own pages only; OME series that point at other files are not followed, so pass
every file of a multi-file acquisition in order.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from algorithms.io._common import bad

_MM_TAG = 51123  # MicroManagerMetadata, one JSON object per page
# Larger than any camera (16384² px); a header claiming more is hostile or broken, and one such frame would
# already need gigabytes of memory downstream.
MAX_FRAME_PIXELS = 16384 * 16384


@dataclass
class MovieMetadata:
    px_size_nm: float | None = None
    roi: tuple[int, int, int, int] | None = None  # x, y, width, height (camera pixels)
    em_gain: float | None = None
    exposure_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _LogCatcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().splitlines()[0])


class _File:
    """One TIFF file's frames: memory-mapped views when possible, else decoded page by page."""

    def __init__(self, path: Path):
        import tifffile

        self.path = path
        # tifffile logs (rather than raises) a broken IFD chain and returns the pages before it: a
        # truncated file would silently become a shorter movie, so its errors are caught here.
        errors = _LogCatcher()
        logger = logging.getLogger("tifffile")
        # A host application's logging config may have disabled this logger (dictConfig's
        # disable_existing_loggers) or raised its level: re-enable it while we listen.
        disabled, level = logger.disabled, logger.level
        logger.disabled = False
        logger.setLevel(min(level or logging.ERROR, logging.ERROR))
        logger.addHandler(errors)
        try:
            self.tif = tifffile.TiffFile(path)
            self.tif.pages.useframes = True  # light TiffFrame objects after the first page: 4× faster
            pages = list(self.tif.pages)
        except Exception as exc:  # tifffile raises many kinds on damaged files
            detail = str(exc).splitlines()[0] if str(exc) else ""
            raise bad(path, f"not a readable TIFF ({type(exc).__name__}: {detail})") from None
        finally:
            logger.removeHandler(errors)
            logger.disabled, logger.level = disabled, level
        if errors.messages:
            self.tif.close()
            raise bad(path, f"TIFF is truncated or corrupt ({errors.messages[0]})")
        if not pages:
            raise bad(path, "TIFF has no images")
        first = pages[0]
        if first.samplesperpixel != 1 or len(first.shape) != 2:
            self.tif.close()
            raise bad(path, f"frames must be single-channel 2D images, found shape {first.shape}")
        if int(np.prod(first.shape)) > MAX_FRAME_PIXELS:
            self.tif.close()
            raise bad(path, f"frames of {first.shape[1]} × {first.shape[0]} px are larger than any camera "
                      f"(at most {MAX_FRAME_PIXELS:,} px per frame)")
        self.shape = first.shape
        self.dtype = first.dtype
        self.pages = pages
        self.channels = _channels(self.tif, path)
        self.offsets: list[int] | None = None
        n_imagej = int((self.tif.imagej_metadata or {}).get("images", 0)) if self.tif.is_imagej else 0
        if all(p.is_contiguous and p.shape == self.shape and p.dtype == self.dtype for p in pages):
            self.offsets = [int(p.dataoffsets[0]) for p in pages]
            if n_imagej > len(pages) == 1:  # ImageJ > 4 GB: frames follow the first one, no more IFDs
                nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
                self.offsets = [self.offsets[0] + i * nbytes for i in range(n_imagej)]
        self._map: np.memmap | None = None
        if self.offsets is not None:
            need = self.offsets[-1] + int(np.prod(self.shape)) * self.dtype.itemsize
            if need > path.stat().st_size:
                self.tif.close()
                raise bad(path, f"TIFF is truncated ({path.stat().st_size} bytes, frames need {need})")
            self._map = np.memmap(path, dtype=np.uint8, mode="r")

    def __len__(self) -> int:
        return len(self.offsets) if self.offsets is not None else len(self.pages)

    @property
    def memory_mapped(self) -> bool:
        return self._map is not None

    def frame(self, i: int) -> np.ndarray:
        if self._map is not None and self.offsets is not None:
            n = int(np.prod(self.shape)) * self.dtype.itemsize
            start = self.offsets[i]
            raw = self._map[start:start + n].view(self.dtype.newbyteorder(self.pages[0].parent.byteorder))
            return raw.reshape(self.shape)
        try:
            return self.pages[i].asarray()
        except Exception as exc:  # damaged compressed data
            raise bad(self.path, f"frame {i} cannot be decoded ({type(exc).__name__})") from None

    def close(self) -> None:
        self._map = None
        self.tif.close()


class _RawFile:
    """A Picasso raw movie: headerless frames (``.raw``) described by the ``.yaml`` beside it (Width, Height,
    Frames, Data Type, Byte Order; Picasso writes a list of YAML documents, the first one describes the movie).
    Memory-mapped; the file must hold exactly the frames the YAML declares."""

    channels = 1

    def __init__(self, path: Path):
        import yaml

        self.path = path
        info_path = path.with_suffix(".yaml")
        if not info_path.is_file():
            raise bad(path, f"a Picasso raw movie is read with its {info_path.name} (Width, Height, Frames, "
                            "Data Type, Byte Order), which is not beside it")
        try:
            docs = list(yaml.safe_load_all(info_path.read_text(errors="replace")))
            info = docs[0] if docs and isinstance(docs[0], dict) else {}
            width, height, frames = (int(info[k]) for k in ("Width", "Height", "Frames"))
            dtype = np.dtype(str(info.get("Data Type", "uint16"))).newbyteorder(str(info.get("Byte Order", "<")))
        except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
            raise bad(info_path, f"not a Picasso movie description ({type(exc).__name__}: {exc}); it needs "
                                 "Width, Height, Frames and Data Type") from None
        if min(width, height, frames) < 1 or width * height > MAX_FRAME_PIXELS:
            raise bad(info_path, f"declares frames of {width} × {height} px, {frames} of them: not a camera movie")
        need = width * height * frames * dtype.itemsize
        if path.stat().st_size != need:
            raise bad(path, f"holds {path.stat().st_size} bytes; {frames} frames of {width} × {height} "
                            f"{dtype.name} are {need} (truncated, or the .yaml is another movie's)")
        self.shape, self.dtype, self.info = (height, width), dtype, info
        self._map: np.memmap | None = np.memmap(path, dtype=dtype, mode="r", shape=(frames, height, width))

    def __len__(self) -> int:
        return 0 if self._map is None else len(self._map)

    @property
    def memory_mapped(self) -> bool:
        return True

    def frame(self, i: int) -> np.ndarray:
        return np.asarray(self._map[i])

    def metadata(self) -> MovieMetadata:
        px = self.info.get("Pixelsize")
        return MovieMetadata(px_size_nm=float(px) if isinstance(px, int | float) else None,
                             extra={"picasso": True})

    def close(self) -> None:
        self._map = None


class Movie:
    """Several TIFF files (or Picasso raw movies) as one (T, H, W) movie. Index with an int (one frame) or a
    slice (a block)."""

    def __init__(self, paths: Sequence[Path | str]):
        if not paths:
            raise ValueError("a movie needs at least one file")
        self.files: list[_File] = []
        try:
            for path in paths:
                path = Path(path)
                if not path.is_file():
                    raise bad(path, "no such file")
                self.files.append(_RawFile(path) if path.suffix.lower() == ".raw" else _File(path))
        except BaseException:
            self.close()
            raise
        shapes = {f.shape for f in self.files}
        if len(shapes) > 1:
            raise bad(self.files[-1].path, f"frame size differs between files: {sorted(shapes)}")
        if len({f.channels for f in self.files}) > 1:
            raise bad(self.files[-1].path, "the files hold different numbers of channels: "
                                           f"{', '.join(str(f.channels) for f in self.files)}")
        for f in self.files:
            if len(f) % f.channels:
                raise bad(f.path, f"holds {len(f)} images, not a whole number of frames of {f.channels} channels")
        self._starts = np.cumsum([0] + [len(f) for f in self.files])
        first = self.files[0]
        self.metadata = first.metadata() if isinstance(first, _RawFile) else read_metadata(first)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (int(self._starts[-1]), *self.files[0].shape)

    @property
    def channels(self) -> int:
        """Channels the files declare (tifffile or ImageJ axes ...CYX), stored interleaved: image t·C + c is
        channel c of frame t. 1 when they declare none."""
        return self.files[0].channels

    @property
    def dtype(self) -> np.dtype:
        return self.files[0].dtype

    @property
    def memory_mapped(self) -> bool:
        return all(f.memory_mapped for f in self.files)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def frame(self, t: int) -> np.ndarray:
        if not -len(self) <= t < len(self):
            raise IndexError(f"frame {t} out of range for {len(self)} frames")
        t %= len(self)
        k = int(np.searchsorted(self._starts, t, side="right") - 1)
        return self.files[k].frame(t - int(self._starts[k]))

    def __getitem__(self, index: int | slice) -> np.ndarray:
        if isinstance(index, slice):
            return self.block(*index.indices(len(self))[:2]) if index.step in (None, 1) else \
                np.stack([self.frame(t) for t in range(*index.indices(len(self)))])
        return self.frame(int(index))

    def block(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) as a new (t, H, W) array."""
        out = np.empty((max(0, stop - start), *self.files[0].shape), dtype=self.dtype)
        for i, t in enumerate(range(start, stop)):
            out[i] = self.frame(t)
        return out

    def chunks(self, frames_per_chunk: int = 256) -> Iterator[tuple[int, np.ndarray]]:
        """(first frame index, (t, H, W) block) over the whole movie; memory bounded by one block."""
        for start in range(0, len(self), frames_per_chunk):
            yield start, self.block(start, min(len(self), start + frames_per_chunk))

    def close(self) -> None:
        for f in self.files:
            f.close()

    def __enter__(self) -> Movie:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _channels(tif: Any, path: Path) -> int:
    """How many channels a TIFF declares per frame; only the interleaved order (axes ending in CYX) is read,
    any other order is refused rather than taken for a longer movie of one channel."""
    try:
        series = tif.series[0] if tif.series else None
    except Exception:  # noqa: BLE001 - metadata tifffile cannot parse: no declared axes
        return 1
    axes = getattr(series, "axes", "") or ""
    if "C" not in axes or series.shape[axes.index("C")] == 1:
        return 1
    channels = int(series.shape[axes.index("C")])
    if not axes.endswith("CYX"):
        raise bad(path, f"holds {channels} channels stored one after the other (axes {axes}); save them "
                        "interleaved (axes TCYX) or one file per camera")
    return channels


def open_movie(paths: Path | str | Sequence[Path | str]) -> Movie:
    """A Movie from one path, a folder (its .tif/.tiff files in name order) or a list of paths."""
    if isinstance(paths, str | Path):
        path = Path(paths)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".tif", ".tiff", ".raw"))
            if not files:
                raise bad(path, "folder holds no .tif/.tiff/.raw files")
            return Movie(files)
        return Movie([path])
    return Movie(list(paths))


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _number(value: Any) -> float | None:
    if isinstance(value, dict) and "PropVal" in value:  # Micro-Manager 2 property records
        value = value["PropVal"]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _roi(value: Any) -> tuple[int, int, int, int] | None:
    if isinstance(value, dict) and "PropVal" in value:
        value = value["PropVal"]
    if isinstance(value, str):
        parts = [p for p in re.split(r"[-,\s\[\]]+", value) if p]
        value = parts
    try:
        x, y, w, h = (int(float(v)) for v in value)
    except (TypeError, ValueError):
        return None
    return x, y, w, h


def read_metadata(file: _File) -> MovieMetadata:
    """Pixel size, ROI, EM gain and exposure from Micro-Manager, OME or ImageJ metadata, when present."""
    meta = MovieMetadata()
    tif = file.tif
    summary: dict[str, Any] = {}
    mm = tif.micromanager_metadata if tif.is_micromanager else None
    if isinstance(mm, dict):
        summary = _as_dict(mm.get("Summary", {}))
    page_tag = file.pages[0].tags.get(_MM_TAG)
    page_mm = _as_dict(page_tag.value) if page_tag is not None else {}
    merged = {**summary, **page_mm}
    if merged:
        meta.extra["micromanager"] = True
        for key in ("Exposure-ms", "Exposure"):
            if _number(merged.get(key)) is not None:
                meta.exposure_ms = _number(merged[key])
                break
        for key in ("ROI", "Camera-ROI"):
            if key in merged and _roi(merged[key]):
                meta.roi = _roi(merged[key])
                break
        for key, value in merged.items():
            if re.search(r"EM.?Gain|Gain.?EM|Multiplier", key, re.IGNORECASE) and _number(value) is not None:
                meta.em_gain = _number(value)
                break
        for key in ("PixelSize_um", "PixelSizeUm"):
            if _number(merged.get(key)):
                meta.px_size_nm = _number(merged[key]) * 1000.0
                break
    if meta.px_size_nm is None and tif.is_ome and tif.ome_metadata:
        match = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata)
        unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', tif.ome_metadata)
        if match:
            factor = {"nm": 1.0, "µm": 1000.0, "um": 1000.0, "mm": 1e6}.get(unit[1] if unit else "µm", 1000.0)
            meta.px_size_nm = float(match[1]) * factor
    if meta.px_size_nm is None and tif.is_imagej:
        unit = str((tif.imagej_metadata or {}).get("unit", "")).lower()
        tag = file.pages[0].tags.get("XResolution")
        factor = {"nm": 1.0, "nanometer": 1.0, "micron": 1000.0, "um": 1000.0, "µm": 1000.0}.get(unit)
        if tag is not None and factor:
            num, den = tag.value
            if num:
                meta.px_size_nm = den / num * factor
    return meta
