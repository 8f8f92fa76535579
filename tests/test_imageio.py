"""osdhuman.imageio: every unusual-but-valid and every broken input kind."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from osdhuman.imageio import (
    ImageReadError,
    apply_orientation,
    list_images,
    orient_points,
    read_rgb,
    read_rgb_info,
    write_image,
)


def _photo(h=48, w=64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], -1).astype(np.uint8)


def _png_header(w: int, h: int) -> bytes:
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _pil_reference(path) -> np.ndarray:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"))


def test_jpeg_fast_path_matches_pillow(tmp_path):
    p = tmp_path / "a.jpg"
    Image.fromarray(_photo()).save(p, quality=90)
    arr = read_rgb(p)
    assert arr.dtype == np.uint8 and arr.shape == (48, 64, 3) and arr.flags.c_contiguous
    np.testing.assert_array_equal(arr, _pil_reference(p))
    g = tmp_path / "g.jpg"
    Image.fromarray(_photo()[..., 0]).save(g, quality=90)  # grayscale JPEG, also decoded by OpenCV
    np.testing.assert_array_equal(read_rgb(g), _pil_reference(g))
    p2 = tmp_path / "prog.jpg"
    Image.fromarray(_photo()).save(p2, quality=90, progressive=True)
    np.testing.assert_array_equal(read_rgb(p2), _pil_reference(p2))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow_and_boxes_follow(tmp_path, orientation):
    img = np.zeros((40, 70, 3), np.uint8)
    img[5:15, 10:30] = 255  # a white box at x 10..30, y 5..15 of the stored pixels
    p = tmp_path / f"o{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(img).save(p, quality=100, exif=exif.tobytes())
    arr, info = read_rgb_info(p)
    assert info.orientation == orientation and info.raw_size == (70, 40)
    ref = _pil_reference(p)
    np.testing.assert_array_equal(arr, ref)
    # same pixels through the Pillow path (PNG with the same EXIF)
    p2 = tmp_path / f"o{orientation}.png"
    Image.fromarray(img).save(p2, exif=exif.tobytes())
    np.testing.assert_array_equal(read_rgb(p2), apply_orientation(img, orientation))
    # the stored box maps onto the white region of the oriented image
    corners = orient_points(np.array([[10.0, 5.0], [30.0, 15.0]]), orientation, 70, 40)
    x0, x1 = sorted(corners[:, 0])
    y0, y1 = sorted(corners[:, 1])
    oriented = read_rgb(p2)
    assert oriented[int(y0):int(y1), int(x0):int(x1)].min() == 255
    assert oriented.sum() == img.sum()


def test_grayscale_palette_cmyk_16bit_alpha_webp(tmp_path):
    base = _photo()
    Image.fromarray(base[..., 0]).save(tmp_path / "gray.png")
    g = read_rgb(tmp_path / "gray.png")
    assert g.shape == (48, 64, 3) and (g[..., 0] == g[..., 2]).all()
    np.testing.assert_array_equal(g[..., 0], base[..., 0])

    Image.fromarray(base).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "pal.png")
    assert read_rgb(tmp_path / "pal.png").shape == (48, 64, 3)

    Image.fromarray(base).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    c = read_rgb(tmp_path / "cmyk.jpg")
    assert c.shape == (48, 64, 3) and np.abs(c.astype(int) - base).mean() < 12

    v16 = (base[..., 1].astype(np.uint16) * 257)  # 16-bit grayscale, full range
    Image.fromarray(v16).save(tmp_path / "g16.png")
    g16 = read_rgb(tmp_path / "g16.png")
    assert g16.dtype == np.uint8
    np.testing.assert_array_equal(g16[..., 0], base[..., 1])

    rgba = np.dstack([base, np.full(base.shape[:2], 255, np.uint8)])
    rgba[:10, :10, 3] = 0  # transparent corner composites on white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    a = read_rgb(tmp_path / "alpha.png")
    assert (a[:10, :10] == 255).all()
    np.testing.assert_array_equal(a[20:, 20:], base[20:, 20:])

    Image.fromarray(base).save(tmp_path / "x.webp", lossless=True)
    np.testing.assert_array_equal(read_rgb(tmp_path / "x.webp"), base)


def _reason(path) -> str:
    with pytest.raises(ImageReadError) as ei:
        read_rgb(path)
    assert str(path) in str(ei.value)
    return ei.value.reason


def test_broken_inputs_have_specific_reasons(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert _reason(tmp_path / "empty.jpg") == "empty_file"
    assert _reason(tmp_path / "missing.jpg") == "missing_file"
    (tmp_path / "text.jpg").write_text("this is not an image\n" * 10)
    assert _reason(tmp_path / "text.jpg") == "not_an_image"
    Image.new("RGB", (1, 1)).save(tmp_path / "one.png")
    assert _reason(tmp_path / "one.png") == "too_small"
    buf = io.BytesIO()
    Image.fromarray(_photo(200, 200)).save(buf, "JPEG", quality=90)
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert _reason(tmp_path / "trunc.jpg") == "truncated_image"
    buf = io.BytesIO()
    Image.fromarray(_photo(200, 200)).save(buf, "PNG")
    (tmp_path / "trunc.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert _reason(tmp_path / "trunc.png") == "truncated_image"
    # decompression bombs: tiny files whose headers claim huge sizes, above our limit only
    # (12000^2 = 144 Mpx: Pillow merely warns) and above Pillow's own hard limit (30000^2)
    for side in (12000, 30000):
        (tmp_path / f"bomb{side}.png").write_bytes(_png_header(side, side))
        assert _reason(tmp_path / f"bomb{side}.png") == "decompression_bomb"
    # a real (small) image above an explicit limit
    Image.fromarray(_photo(200, 200)).save(tmp_path / "big.png")
    with pytest.raises(ImageReadError) as ei:
        read_rgb(tmp_path / "big.png", max_pixels=10_000)
    assert ei.value.reason == "decompression_bomb"
    (tmp_path / "adir.jpg").mkdir()
    assert _reason(tmp_path / "adir.jpg") == "not_a_file"


def test_write_image_atomic_and_list_images(tmp_path):
    arr = _photo()
    out = write_image(arr, tmp_path / "sub" / "x.png")
    np.testing.assert_array_equal(read_rgb(out), arr)
    with pytest.raises(FileExistsError):
        write_image(arr, out, overwrite=False)
    (tmp_path / "sub" / "notes.txt").write_text("x")
    (tmp_path / "sub" / ".hidden.png").write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["x.png"]
    assert not list(tmp_path.glob("sub/.*tmp*"))


def test_scan_reports_every_entry_it_leaves_out(tmp_path):
    from osdhuman.imageio import scan_images

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "b.avif")  # Pillow reads AVIF
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    (tmp_path / "params.jsonl").write_text("{}")  # what osdhuman degrade writes: not reported
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    (tmp_path / "x.jpg").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.jpg" / "inside.png")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "up").symlink_to(tmp_path)
    files, skipped = scan_images(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a.png", "b.avif", "x.jpg/inside.png"]
    assert {Path(f).relative_to(tmp_path).as_posix(): why for f, why in skipped} == {
        "notes.txt": "not_an_image_extension", ".hidden.png": "hidden_file", "dangling.jpg": "dangling_link",
        "loop.jpg": "link_loop", "x.jpg": "directory", "sub/up": "link_loop"}
