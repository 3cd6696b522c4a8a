"""Any PIL image as 8 bits a channel, by its real bit depth: Pillow's own ``convert`` clips 16- and 32-bit grey
to 255 (a 16-bit scan would decode as all white) and truncates 32-bit float to 0 or 1."""
from __future__ import annotations

import numpy as np

SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def _integer_bits(img, values: np.ndarray) -> int:
    """The bit depth of a 32-bit integer ("I") image: PNG stores at most 16, a TIFF says so in its tags."""
    if img.format == "PNG":
        return 16
    tags = getattr(img, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None  # BitsPerSample
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    if isinstance(bits, int) and 0 < bits <= 32:
        return bits
    return 16 if values.size == 0 or int(values.max()) <= 65535 else 32


def _scaled(values: np.ndarray, top: float, what: str):
    """``values`` in [0, top] as an 8-bit grey image, rounded (within half a level of the true value)."""
    from PIL import Image

    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > top:
        raise ValueError(f"its {what} values run from {lo:g} to {hi:g}, outside 0 to {top:g}")
    return Image.fromarray(np.rint(values.astype(np.float64) * (255.0 / top)).astype(np.uint8), "L")


def eight_bit(img):
    """``img`` as an 8-bit image that ``convert("L")`` / ``convert("RGB")`` read right: 16-bit grey scaled from
    0..65535, 32-bit integer grey from its bit depth, 32-bit float grey from [0, 1] (other ranges are refused,
    as ValueError), palette images through RGB(A). Alpha is dropped by the later conversion (the colour is kept
    as stored); 1-bit, grey+alpha, RGBA and CMYK are converted by Pillow exactly."""
    mode = img.mode
    if mode in SIXTEEN_BIT:
        return _scaled(np.asarray(img), 65535, "16-bit")
    if mode == "I":
        values = np.asarray(img)
        bits = _integer_bits(img, values)
        return _scaled(values, 2 ** bits - 1, f"{bits}-bit")
    if mode == "F":
        return _scaled(np.asarray(img), 1.0, "32-bit float")
    if mode in ("P", "PA"):  # via RGBA when transparent: Pillow warns on a direct conversion of those
        return img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB")
    return img
