"""A small crafted HQ-ACF input: annotated textured photos plus every broken / unusual file kind."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

# Small sizes so a whole build takes well under a second per run.
FAST = [
    "crop.size=64", "boxes.min_long_side=40", "boxes.min_short_side=10", "blur.min_laplacian_var=50",
    "exec.shard_size=3", "iqa.metrics=[laplacian_var]", "split.val_fraction=0.25", "exec.report_thumbs=4",
]


def textured(h: int, w: int, seed: int, sigma: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return cv2.GaussianBlur(img, (0, 0), sigma) if sigma > 0 else img


def fake_png_header(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels (a decompression bomb without the memory)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def fast_overrides() -> list[str]:
    return list(FAST)


@pytest.fixture(scope="session")
def crafted(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("crafted")
    imgs = root / "images"
    imgs.mkdir()
    images, anns = [], []

    def add(name: str, w: int, h: int, boxes: list, write=None, category: int = 1):
        img_id = len(images) + 1
        images.append({"id": img_id, "file_name": name, "width": w, "height": h})
        for b in boxes:
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": category, "bbox": b, "iscrowd": 0})
        if write is not None:
            write(imgs / name)

    # good photos: sharpness varies (sigma), so the IQA score (Laplacian) ranks them
    for i in range(8):
        arr = textured(160, 200, i, sigma=0.3 + 0.25 * i)
        add(f"good{i}.jpg", 200, 160, [[20, 30, 50, 100], [120, 10, 60, 120]],
            lambda p, a=arr: Image.fromarray(a).save(p, quality=95))
    add("blurry.jpg", 200, 160, [[20, 30, 50, 100]], lambda p: Image.fromarray(textured(160, 200, 99, 6)).save(p))
    add("zero.jpg", 200, 160, [[20, 30, 50, 100]], lambda p: p.write_bytes(b""))
    add("text.jpg", 200, 160, [[20, 30, 50, 100]], lambda p: p.write_text("not an image\n" * 20))

    def trunc(p: Path):
        Image.fromarray(textured(160, 200, 5, 0.5)).save(p, quality=95)
        p.write_bytes(p.read_bytes()[:3000])
    add("trunc.jpg", 200, 160, [[20, 30, 50, 100]], trunc)
    add("one.png", 200, 160, [[20, 30, 50, 100]], lambda p: Image.new("RGB", (1, 1)).save(p))  # claims 200x160
    add("bomb.png", 30000, 30000, [[20, 30, 500, 1000]], lambda p: p.write_bytes(fake_png_header(30000, 30000)))
    add("missing.jpg", 200, 160, [[20, 30, 50, 100]])  # named by the annotations, not on disk
    add("wrongsize.jpg", 640, 480, [[20, 30, 50, 100]], lambda p: Image.fromarray(textured(160, 200, 7, 0.5)).save(p))
    # unusual but valid: grayscale, palette, CMYK, 16-bit, alpha, WebP, EXIF-rotated
    base = textured(160, 200, 11, 0.5)
    add("gray.png", 200, 160, [[20, 30, 50, 100]], lambda p: Image.fromarray(base[..., 0]).save(p))
    add("palette.png", 200, 160, [[20, 30, 50, 100]],
        lambda p: Image.fromarray(base).convert("P", palette=Image.Palette.ADAPTIVE).save(p))
    add("cmyk.jpg", 200, 160, [[20, 30, 50, 100]], lambda p: Image.fromarray(base).convert("CMYK").save(p, quality=95))
    add("g16.png", 200, 160, [[20, 30, 50, 100]], lambda p: Image.fromarray(base[..., 1].astype(np.uint16) * 257).save(p))
    add("alpha.png", 200, 160, [[20, 30, 50, 100]],
        lambda p: Image.fromarray(np.dstack([base, np.full((160, 200), 200, np.uint8)]), "RGBA").save(p))
    add("photo.webp", 200, 160, [[20, 30, 50, 100]], lambda p: Image.fromarray(base).save(p, lossless=True))

    def rotated(p: Path):  # stored 200x160, EXIF orientation 6 (displayed 160x200, rotated clockwise)
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(textured(160, 200, 12, 0.5)).save(p, quality=95, exif=exif.tobytes())
    # annotated on the stored pixels (size 200x160): box x 20..70, y 30..130
    add("rotated.jpg", 200, 160, [[20, 30, 50, 100]], rotated)
    # malformed annotation rows
    anns.append({"id": 900, "image_id": 1, "category_id": 1, "bbox": [1, 2, "wide", 4]})
    anns.append({"id": 901, "image_id": 4242, "category_id": 1, "bbox": [1, 2, 3, 4]})
    ann = root / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns,
                               "categories": [{"id": 1, "name": "person"}]}))
    return {"root": root, "ann": ann, "images": imgs, "source": f"coco:{ann}:{imgs}"}
