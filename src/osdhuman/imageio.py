"""Reading and writing images the same way everywhere in osdhuman.

``read_rgb`` turns anything Pillow can open (JPEG, PNG, WebP, TIFF, BMP, ...; grayscale,
palette, CMYK, 16-bit, alpha, EXIF-rotated) into an 8-bit RGB ``numpy`` array of shape
(H, W, 3) with the EXIF orientation applied. Whatever it cannot use raises
:class:`ImageReadError` whose ``reason`` is a short machine-readable code (recorded in
manifests) and whose message names the file.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from osdhuman.outputs import TMP_MARK, atomic_path

# pillow_heif (optional) is imported inside the HEIC opener.

# files osdhuman writes beside its images (degrade / restore folders are inputs of the next
# command): not reported as skipped entries
OWN_FILES = frozenset({"params.jsonl", "skipped.jsonl", "config.yaml", "restore_config.yaml", "restore_report.json",
                       "restore_records.jsonl"})

# Pillow's default bomb limit (~179 Mpx warns, 2x that raises). We make the warning an error
# too, with an explicit, configurable limit.
MAX_PIXELS = 100_000_000
MIN_SIDE = 2

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")

__all__ = ["IMAGE_EXTENSIONS", "MAX_PIXELS", "ImageInfo", "ImageReadError", "apply_orientation", "image_extensions", "list_images", "scan_images", "orient_points", "read_rgb", "read_rgb_info", "write_image"]


class ImageReadError(Exception):
    """An input image that cannot be used. ``reason`` is a stable short code."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}" + (f" ({detail})" if detail else ""))


def _to_rgb8(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(np.round(arr / hi * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.round(arr * scale), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Composite on white: transparent regions of product shots / cut-outs become white,
        # not the undefined colour stored under alpha 0.
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if mode == "RGB":
        return img
    return img.convert("RGB")  # L, P, CMYK, YCbCr, 1, ...


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`read_rgb_info` learnt about the file besides its pixels."""

    format: str | None  # Pillow's format name ("JPEG", "PNG", ...)
    mode: str  # Pillow's mode before conversion ("RGB", "I;16", "CMYK", ...)
    raw_size: tuple[int, int]  # (w, h) as stored, before the EXIF orientation
    orientation: int  # EXIF orientation tag, 1 (none) .. 8


def _orientation(img: Image.Image) -> int:
    try:
        o = int(img.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block (any error of Pillow's parser) leaves the pixels usable
        return 1
    return o if 1 <= o <= 8 else 1


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation ``orientation`` to pixels (H, W, C) as Pillow's exif_transpose."""
    if orientation == 2:
        return cv2.flip(arr, 1)
    if orientation == 3:
        return cv2.rotate(arr, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(arr, 0)
    if orientation == 5:
        return cv2.transpose(arr)
    if orientation == 6:
        return cv2.rotate(arr, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.flip(cv2.transpose(arr), -1)
    if orientation == 8:
        return cv2.rotate(arr, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return arr


def orient_points(xy: np.ndarray, orientation: int, raw_w: float, raw_h: float) -> np.ndarray:
    """Map points (N, 2) given on the stored pixels to the EXIF-oriented image (continuous coords)."""
    x, y = xy[:, 0], xy[:, 1]
    W, H = raw_w, raw_h
    table = {
        1: (x, y), 2: (W - x, y), 3: (W - x, H - y), 4: (x, H - y),
        5: (y, x), 6: (H - y, x), 7: (H - y, W - x), 8: (y, W - x),
    }
    nx, ny = table.get(orientation, (x, y))
    return np.stack([nx, ny], axis=1)


def _has_jpeg_eoi(buf: np.ndarray) -> bool:
    tail = buf[-4096:].tobytes()
    return b"\xff\xd9" in tail


def read_rgb_info(path: str | os.PathLike, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> tuple[np.ndarray, ImageInfo]:
    """Decode ``path`` to a contiguous uint8 array (H, W, 3), EXIF orientation applied, and its info.

    Plain 8-bit RGB / grayscale JPEGs that end with their EOI marker are decoded by OpenCV
    (libjpeg-turbo straight into RGB, about twice as fast as Pillow + a copy); everything
    else goes through Pillow. Both give the same pixels (tests/test_imageio.py).
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise ImageReadError(p, "missing_file") from None
    except OSError as exc:
        raise ImageReadError(p, "unreadable_file", str(exc)) from None
    if p.is_dir():
        raise ImageReadError(p, "not_a_file")
    if size == 0:
        raise ImageReadError(p, "empty_file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageReadError(p, "decompression_bomb", f"{w}x{h} exceeds {max_pixels} pixels")
                if min(w, h) < min_side:
                    raise ImageReadError(p, "too_small", f"{w}x{h}")
                orientation = _orientation(img)
                info = ImageInfo(img.format, img.mode, (w, h), orientation)
                if img.format == "JPEG" and img.mode in ("RGB", "L"):
                    buf = np.fromfile(p, dtype=np.uint8)
                    if _has_jpeg_eoi(buf):
                        arr = cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
                        if arr is not None and arr.shape[:2] == (h, w):
                            arr = apply_orientation(arr, orientation)
                            return np.ascontiguousarray(arr), info
                img.load()
                if orientation != 1:
                    img = ImageOps.exif_transpose(img)
                rgb = _to_rgb8(img)
                arr = np.asarray(rgb, dtype=np.uint8)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(p, "decompression_bomb", str(exc)) from None
    except UnidentifiedImageError:
        raise ImageReadError(p, "not_an_image") from None
    except IsADirectoryError:
        raise ImageReadError(p, "not_a_file") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, MemoryError) as exc:
        msg = str(exc)
        if isinstance(exc, OSError) and exc.errno is not None:  # the system refused the bytes (permission, I/O)
            raise ImageReadError(p, "unreadable_file", exc.strerror or msg) from None
        reason = "truncated_image" if ("truncated" in msg or "broken" in msg or isinstance(exc, EOFError)) else "corrupt_image"
        raise ImageReadError(p, reason, msg) from None
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageReadError(p, "unsupported_layout", f"decoded shape {arr.shape}")
    return np.ascontiguousarray(arr), info


def read_rgb(path: str | os.PathLike, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> np.ndarray:
    """Decode ``path`` to a contiguous uint8 array (H, W, 3), EXIF orientation applied."""
    return read_rgb_info(path, max_pixels, min_side)[0]


def write_image(arr: np.ndarray, path: str | os.PathLike, quality: int = 95, overwrite: bool = True) -> Path:
    """Write uint8 (H, W, 3) RGB to ``path`` atomically (format from the extension)."""
    p = Path(path)
    if not overwrite and p.exists():
        raise FileExistsError(f"{p}: exists and overwrite=False")
    img = Image.fromarray(np.ascontiguousarray(arr))
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}.get(p.suffix.lower(), None)
    kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    with atomic_path(p) as tmp:
        img.save(tmp, format=fmt, **kwargs)
    return p


def list_images(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under ``root`` (by extension), sorted for determinism."""
    return scan_images(root, recursive)[0]


def scan_images(root: str | os.PathLike, recursive: bool = True) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files under ``root`` (sorted) and every entry left out, with its reason.

    Reasons: ``not_an_image_extension``, ``hidden_file``, ``dangling_link``, ``link_loop``
    (a symlink cycle, or a folder link back into the tree), ``directory`` (a folder named
    like an image, e.g. ``x.jpg/``; its contents are still listed when ``recursive``),
    ``unreadable_entry``. Folder symlinks are followed once.
    """
    root = Path(root)
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    seen = {os.path.realpath(root)}
    _scan_dir(root, recursive, files, skipped, seen)
    return sorted(files), sorted(skipped)


def entry_kind(p: Path) -> str:
    """'file' | 'dir' | 'dangling_link' | 'link_loop' | 'unreadable_entry' | 'other'."""
    try:
        st = os.stat(p)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "link_loop"
        if exc.errno == errno.ENOENT and os.path.islink(p):
            return "dangling_link"
        return "unreadable_entry"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return "file" if stat.S_ISREG(st.st_mode) else "other"


def _scan_dir(folder: Path, recursive: bool, files: list[Path], skipped: list[tuple[str, str]], seen: set[str]) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        skipped.append((str(folder), f"unreadable_entry ({exc.strerror})"))
        return
    exts = image_extensions()
    for e in entries:
        p = Path(e.path)
        kind = entry_kind(p)
        looks_image = p.suffix.lower() in exts
        if kind == "dir":
            if e.name.startswith("."):
                continue  # hidden folders (.git, caches) are not data
            if looks_image:
                skipped.append((str(p), "directory"))
            if not recursive:
                continue
            real = os.path.realpath(p)
            if real in seen:
                skipped.append((str(p), "link_loop"))
                continue
            seen.add(real)
            _scan_dir(p, recursive, files, skipped, seen)
        elif kind == "file":
            if e.name.startswith("."):
                if not _own_hidden(e.name):  # our temp files, journals and lock are not the user's
                    skipped.append((str(p), "hidden_file"))
            elif looks_image:
                files.append(p)
            elif e.name not in OWN_FILES:
                skipped.append((str(p), "not_an_image_extension"))
        elif kind == "other":
            skipped.append((str(p), "not_a_regular_file"))
        else:
            skipped.append((str(p), kind))


def _own_hidden(name: str) -> bool:
    return TMP_MARK in name or name.endswith(".journal") or name == ".osdhuman.lock"


def image_extensions() -> tuple[str, ...]:
    """IMAGE_EXTENSIONS plus AVIF / HEIC when this Pillow (or its pillow-heif plugin) reads them."""
    extra = tuple(ext for ext, fmt in Image.registered_extensions().items() if fmt in ("AVIF", "HEIF"))
    return IMAGE_EXTENSIONS + tuple(e for e in extra if e not in IMAGE_EXTENSIONS)


def _register_heif() -> None:
    """Let Pillow open HEIC/HEIF files when pillow-heif is installed (optional)."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()


_register_heif()
Image.init()
ImageFile.LOAD_TRUNCATED_IMAGES = False
