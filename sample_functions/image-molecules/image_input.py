"""Decode the event's base64 image and read its format and size from the header.

Only PNG and JPEG are accepted. The size comes from the PNG IHDR chunk or
the JPEG start-of-frame segment, so no image library is needed for it.
When Pillow is installed (the rdkit wheels depend on it), the whole image
is also decoded once, so a damaged file is rejected here and not by OSRA,
which aborts with SIGABRT on a truncated PNG (osra 2.1.3).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
from dataclasses import dataclass

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8\xff"
# Start-of-frame markers carry the size. C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
DATA_URI_PREFIX = re.compile(r"^data:[\w.+/-]*(;[\w=.+-]+)*;base64,", re.IGNORECASE)


class InvalidBase64(ValueError):
    """The imageBase64 field is not valid base64."""


class InvalidImage(ValueError):
    """The decoded bytes are not a PNG or JPEG image that can be read."""


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "png" or "jpeg"
    width: int
    height: int

    @property
    def mime_type(self) -> str:
        return f"image/{self.format}"


def decode_base64(text: str) -> bytes:
    """Decode standard base64, with or without a data URI prefix such as data:image/png;base64,."""
    payload = DATA_URI_PREFIX.sub("", text.strip(), count=1)
    payload = "".join(payload.split())  # line breaks, as base64 tools wrap at 76 columns
    if not payload:
        raise InvalidBase64("imageBase64 is empty; send the PNG or JPEG file encoded as base64")
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise InvalidBase64(
            f"imageBase64 is not valid base64 ({exc}; it starts with {text.strip()[:20]!r}); "
            "send the PNG or JPEG file encoded with standard base64"
        ) from None


def read_image_info(data: bytes) -> ImageInfo:
    """Return the format and size of a PNG or JPEG image, or raise InvalidImage for anything else."""
    if data.startswith(PNG_SIGNATURE):
        info = _png_info(data)
    elif data.startswith(JPEG_SOI):
        info = _jpeg_info(data)
    else:
        raise InvalidImage(
            f"the decoded imageBase64 is not a PNG or JPEG image (its first bytes are {data[:8]!r}); "
            "send a PNG or JPEG file"
        )
    if info.width == 0 or info.height == 0:
        raise InvalidImage(f"the {info.format.upper()} header gives a size of {info.width}x{info.height} pixels; send an image with pixels in it")
    _check_decodes(data, info)
    return info


def _png_info(data: bytes) -> ImageInfo:
    # The first chunk must be IHDR: length (4 bytes), type (4), then width and height as big-endian uint32.
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise InvalidImage(f"the PNG data is {len(data)} bytes and has no IHDR header chunk; the file is damaged or cut short")
    width, height = struct.unpack(">II", data[16:24])
    return ImageInfo("png", width, height)


def _jpeg_info(data: bytes) -> ImageInfo:
    position = 2
    while position < len(data):
        if data[position] != 0xFF:
            break
        while position < len(data) and data[position] == 0xFF:  # fill bytes before a marker
            position += 1
        if position >= len(data):
            break
        marker = data[position]
        position += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length field
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            break
        if position + 2 > len(data):
            break
        (length,) = struct.unpack(">H", data[position : position + 2])
        if marker in JPEG_SOF_MARKERS:
            if position + 7 > len(data):
                break
            height, width = struct.unpack(">HH", data[position + 3 : position + 7])
            return ImageInfo("jpeg", width, height)
        position += length
    raise InvalidImage("the JPEG data has no start-of-frame segment giving its size; the file is damaged or cut short")


def _check_decodes(data: bytes, info: ImageInfo) -> None:
    try:
        from PIL import Image
    except ImportError:
        return  # Pillow is optional, so only the header has been checked.
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImage(f"the {info.format.upper()} image cannot be decoded ({exc}); the file is damaged or cut short") from None
