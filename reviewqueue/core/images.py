"""Image attachments: strict decoding, validation and normalisation with Pillow.

Agent output is untrusted, so an attachment is accepted only when Pillow recognises it as one
of a few raster formats *and* decodes every pixel of it. Whatever comes in, what is stored is
a fresh encoding made by Pillow: no EXIF, no ICC profile, no text chunks, no trailing bytes.

Output format (a deliberate, simple rule):
- JPEG in -> JPEG out (quality 90): photographs stay small and are not re-inflated.
- anything else (PNG, WebP, GIF's first frame) -> PNG: lossless, right for screenshots,
  keeps transparency and palettes.
The thumbnail (longest side at most 320 px) uses the same format.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from PIL import Image, ImageOps, UnidentifiedImageError

THUMBNAIL_SIZE = 320
JPEG_QUALITY = 90

# Pillow format name -> the content type we accept for it.
ACCEPTED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
ACCEPTED_CONTENT_TYPES = frozenset({*ACCEPTED_FORMATS.values(), "image/jpg"})
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*;base64,", re.IGNORECASE)
_UNSAFE_FILENAME_CHARS = re.compile(r"[^\w.\- ]+")
ATTACHMENT_KEYS = frozenset({"filename", "content_type", "data"})


class ImageError(ValueError):
    """An attachment that is not an acceptable image. `field` is the key at fault."""

    def __init__(self, message: str, field: str = "data") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True, slots=True)
class NormalisedImage:
    filename: str  # sanitised, extension matching the stored format
    content_type: str  # of the stored (re-encoded) image
    data: bytes
    thumbnail: bytes
    width: int
    height: int
    sha256: str  # of `data`

    @property
    def extension(self) -> str:
        return "jpg" if self.content_type == "image/jpeg" else "png"


def normalise_attachment(item: Any, *, label: str = "attachment") -> NormalisedImage:
    """Validate one `{"filename", "content_type", "data": base64}` object and normalise it.

    Raises ImageError with a message starting with `label`, e.g.
    "attachments[0].data: not a valid image (truncated PNG)"."""
    if not isinstance(item, dict):
        raise ImageError(f"{label}: must be an object with filename, content_type and data", field="non_field_errors")
    unknown = set(item) - ATTACHMENT_KEYS
    if unknown:
        raise ImageError(f"{label}: unknown keys {', '.join(sorted(map(str, unknown)))}", field="non_field_errors")
    filename = item.get("filename", "")
    if filename is None:
        filename = ""
    if not isinstance(filename, str) or len(filename) > 255:
        raise ImageError(f"{label}.filename: must be a string of at most 255 characters", field="filename")
    content_type = item.get("content_type")
    if content_type is not None and (
        not isinstance(content_type, str) or content_type.split(";")[0].strip().lower() not in ACCEPTED_CONTENT_TYPES
    ):
        raise ImageError(
            f"{label}.content_type: must be one of image/png, image/jpeg, image/webp, image/gif", field="content_type"
        )
    raw = decode_base64(item.get("data"), label=f"{label}.data")
    return normalise_image(raw, filename=filename, label=f"{label}.data")


def decode_base64(data: Any, *, label: str) -> bytes:
    """Strict base64 (standard alphabet, padding required, no stray characters); a `data:` URL
    prefix is allowed. The size cap is checked before decoding."""
    if not isinstance(data, str) or not data:
        raise ImageError(f"{label}: required, a base64 string", field="data")
    match = _DATA_URL.match(data)
    if match:
        data = data[match.end() :]
    limit = settings.MAX_ATTACHMENT_BYTES
    if len(data) * 3 // 4 > limit + 2:
        raise ImageError(f"{label}: attachment too large (limit {limit} bytes)", field="data")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"{label}: not valid base64 ({exc})", field="data") from None
    if len(raw) > limit:
        raise ImageError(f"{label}: attachment too large ({len(raw)} bytes, limit {limit})", field="data")
    if not raw:
        raise ImageError(f"{label}: empty", field="data")
    return raw


def normalise_image(raw: bytes, *, filename: str = "", label: str = "attachment") -> NormalisedImage:
    image, fmt = _open_fully(raw, label=label)
    try:
        image = ImageOps.exif_transpose(image)
        stored_format = "JPEG" if fmt == "JPEG" else "PNG"
        image = _to_storable_mode(image, stored_format)
        # Drop every piece of metadata (EXIF, ICC, text, XMP); keep only palette transparency.
        transparency = image.info.get("transparency") if image.mode in ("P", "L", "RGB") else None
        image.info = {}
        data = _encode(image, stored_format, transparency)
        thumb = image.copy()
        thumb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        thumb.info = {}
        thumbnail = _encode(thumb, stored_format, transparency if thumb.mode == image.mode else None)
        width, height = image.size
    except (OSError, ValueError, SyntaxError) as exc:  # pragma: no cover - decoded images re-encode
        raise ImageError(f"{label}: could not re-encode the image ({exc})", field="data") from None
    content_type = ACCEPTED_FORMATS[stored_format]
    return NormalisedImage(
        filename=_safe_filename(filename, "jpg" if stored_format == "JPEG" else "png"),
        content_type=content_type,
        data=data,
        thumbnail=thumbnail,
        width=width,
        height=height,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _open_fully(raw: bytes, *, label: str) -> tuple[Image.Image, str]:
    """Identify, verify, check the pixel count, then decode every pixel (first frame)."""
    max_pixels = settings.MAX_IMAGE_PIXELS
    fmt = ""
    with warnings.catch_warnings():
        # Pillow's own bomb check (a module-wide limit) must refuse, never merely warn.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            probe = Image.open(io.BytesIO(raw), formats=list(ACCEPTED_FORMATS))
            fmt = probe.format or ""
            width, height = probe.size
            if width * height > max_pixels:
                raise ImageError(
                    f"{label}: image too large ({width}x{height} pixels, limit {max_pixels})", field="data"
                )
            probe.verify()
            image = Image.open(io.BytesIO(raw), formats=[fmt])
            if image.size != (width, height):  # pragma: no cover - defensive
                raise ImageError(f"{label}: not a valid image (inconsistent size)", field="data")
            image.seek(0)
            image.load()
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise ImageError(
                f"{label}: not a valid image (only PNG, JPEG, WebP and GIF are accepted)", field="data"
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(f"{label}: image too large (decompression bomb refused)", field="data") from None
        except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
            what = fmt or "image"
            reason = f"truncated {what}" if "truncated" in str(exc).lower() else f"broken {what}: {exc}"
            raise ImageError(f"{label}: not a valid image ({reason})", field="data") from None
    if fmt not in ACCEPTED_FORMATS:  # pragma: no cover - `formats=` already restricts it
        raise ImageError(f"{label}: not a valid image (format {fmt} not accepted)", field="data")
    return image, fmt


def _to_storable_mode(image: Image.Image, stored_format: str) -> Image.Image:
    if stored_format == "JPEG":
        return image if image.mode in ("RGB", "L") else image.convert("RGB")
    if image.mode in ("RGB", "RGBA", "L", "LA", "P", "1"):
        return image
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def _encode(image: Image.Image, stored_format: str, transparency: Any = None) -> bytes:
    out = io.BytesIO()
    if stored_format == "JPEG":
        image.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    elif transparency is not None:
        image.save(out, "PNG", transparency=transparency)
    else:
        image.save(out, "PNG")
    return out.getvalue()


def _safe_filename(filename: str, extension: str) -> str:
    base = os.path.basename(filename.replace("\\", "/")).strip()
    stem = os.path.splitext(base)[0]
    stem = _UNSAFE_FILENAME_CHARS.sub("_", stem).strip(" ._")[:100] or "image"
    return f"{stem}.{extension}"
