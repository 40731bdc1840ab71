"""Attachment validation and normalisation (reviewqueue.core.images)."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from PIL import Image

from reviewqueue.core.images import ImageError, normalise_attachment


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (64, 48), mode: str = "RGB", **save: object) -> bytes:
    img = Image.new(mode, size, "red" if mode != "P" else 1)
    out = io.BytesIO()
    img.save(out, fmt, **save)
    return out.getvalue()


def attachment(raw: bytes, filename: str = "shot.png", content_type: str | None = "image/png") -> dict:
    item = {"filename": filename, "data": base64.b64encode(raw).decode()}
    if content_type is not None:
        item["content_type"] = content_type
    return item


def jpeg_with_exif_orientation() -> bytes:
    """A 40x20 JPEG whose EXIF says "rotate 90°" (orientation 6) and carries a camera model."""
    img = Image.new("RGB", (40, 20), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    exif[0x0110] = "SecretCam 3000"  # Model
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG header declaring a huge size (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_png_is_accepted_and_normalised() -> None:
    result = normalise_attachment(attachment(image_bytes("PNG", (640, 480))), label="attachments[0]")
    assert (result.width, result.height) == (640, 480)
    assert result.content_type == "image/png"
    assert result.filename == "shot.png"
    stored = Image.open(io.BytesIO(result.data))
    assert stored.format == "PNG" and stored.size == (640, 480)
    thumb = Image.open(io.BytesIO(result.thumbnail))
    assert max(thumb.size) == 320 and thumb.size == (320, 240)
    import hashlib

    assert result.sha256 == hashlib.sha256(result.data).hexdigest()


def test_jpeg_is_rotated_by_exif_and_loses_its_metadata() -> None:
    raw = jpeg_with_exif_orientation()
    assert Image.open(io.BytesIO(raw)).getexif().get(0x0110) == "SecretCam 3000"
    result = normalise_attachment(attachment(raw, "../../etc/cam.jpeg", "image/jpeg"))
    stored = Image.open(io.BytesIO(result.data))
    assert stored.format == "JPEG"
    assert stored.size == (20, 40)  # orientation applied
    assert (result.width, result.height) == (20, 40)
    assert len(stored.getexif()) == 0
    assert b"SecretCam" not in result.data and b"Exif" not in result.data
    assert result.filename == "cam.jpg"  # no path, extension of what is stored


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [("WEBP", "RGB"), ("GIF", "P"), ("PNG", "RGBA"), ("PNG", "P")],
)
def test_other_raster_formats_become_png(fmt: str, mode: str) -> None:
    result = normalise_attachment(attachment(image_bytes(fmt, (30, 10), mode), "x.bin", None))
    stored = Image.open(io.BytesIO(result.data))
    assert stored.format == "PNG" and stored.size == (30, 10)
    assert result.content_type == "image/png" and result.filename == "x.png"


def test_animated_gif_keeps_the_first_frame() -> None:
    frames = [Image.new("P", (10, 10), color) for color in (1, 2, 3)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    result = normalise_attachment(attachment(out.getvalue(), "anim.gif", "image/gif"))
    stored = Image.open(io.BytesIO(result.data))
    assert getattr(stored, "n_frames", 1) == 1 and stored.size == (10, 10)


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>'
HTML = b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>"


@pytest.mark.parametrize(
    ("raw", "content_type", "expected"),
    [
        (SVG, None, "not a valid image"),
        (HTML, None, "not a valid image"),
        (b"just some text, not an image at all", None, "not a valid image"),
        (image_bytes("PNG", (200, 200))[:300], "image/png", "truncated PNG"),
        (image_bytes("JPEG", (200, 200))[:400], "image/jpeg", "not a valid image"),
        (png_declaring(30000, 30000), "image/png", "image too large"),
        (image_bytes("BMP", (10, 10)), None, "not a valid image"),
    ],
    ids=["svg", "html", "text", "truncated-png", "truncated-jpeg", "decompression-bomb", "bmp"],
)
def test_refused(raw: bytes, content_type: str | None, expected: str) -> None:
    with pytest.raises(ImageError) as caught:
        normalise_attachment(attachment(raw, "f.png", content_type), label="attachments[0]")
    assert caught.value.message.startswith("attachments[0].data: ")
    assert expected in caught.value.message


def test_svg_content_type_is_refused_before_decoding() -> None:
    with pytest.raises(ImageError) as caught:
        normalise_attachment(attachment(SVG, "x.svg", "image/svg+xml"), label="attachments[1]")
    assert caught.value.field == "content_type"
    assert "attachments[1].content_type" in caught.value.message


def test_pixel_cap_comes_from_settings(settings) -> None:
    settings.MAX_IMAGE_PIXELS = 100 * 100
    raw = image_bytes("PNG", (101, 100))
    with pytest.raises(ImageError, match="image too large"):
        normalise_attachment(attachment(raw))
    assert normalise_attachment(attachment(image_bytes("PNG", (100, 100)))).width == 100


@pytest.mark.parametrize("data", ["not base64!!", "aGVsbG8", "aGVs bG8=", "", None, 42])
def test_bad_base64_is_refused(data: object) -> None:
    with pytest.raises(ImageError) as caught:
        normalise_attachment({"filename": "a.png", "content_type": "image/png", "data": data}, label="attachments[0]")
    assert caught.value.message.startswith("attachments[0].data: ")


def test_data_url_prefix_is_accepted() -> None:
    raw = image_bytes("PNG", (5, 5))
    item = {"filename": "a.png", "data": "data:image/png;base64," + base64.b64encode(raw).decode()}
    assert normalise_attachment(item).width == 5


def test_too_big_is_refused_before_decoding(settings) -> None:
    settings.MAX_ATTACHMENT_BYTES = 1000
    raw = image_bytes("PNG", (300, 300), compress_level=0)
    assert len(raw) > 1000
    with pytest.raises(ImageError, match="too large"):
        normalise_attachment(attachment(raw))


def test_unknown_keys_and_non_objects_are_refused() -> None:
    with pytest.raises(ImageError, match="unknown keys url"):
        normalise_attachment({"url": "http://x", "data": "aGk="})
    with pytest.raises(ImageError, match="must be an object"):
        normalise_attachment("aGk=")
