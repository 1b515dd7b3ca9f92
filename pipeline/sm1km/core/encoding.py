"""Packing of soil moisture into int16 with ``scale_factor`` 0.001 (the published product's encoding).

``q = round(value / 0.001)``, NaN → ``FILL`` (−32768), values clipped to ``[valid_min, valid_max]``
(default: the physical bounds of a volume fraction, 0–1 m³/m³) *before* rounding, so a packed value
never wraps around. Resolution 0.001 m³/m³ is ~20× finer than the product's accuracy (ubRMSE ≈ 0.04).

Pure numpy, no I/O. :func:`encode_int16` works block-wise through a small float64 scratch buffer,
so encoding a shard needs only the int16 output (2 bytes/value) beyond its input, and an ``out``
array (e.g. a preallocated shard buffer) is filled in place.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FILL = -32768            #: packed missing value (``_FillValue`` and the Zarr ``fill_value``)
SCALE = 0.001            #: ``scale_factor``; ``add_offset`` is 0
INV_SCALE = 1000.0       #: exact reciprocal of SCALE (multiplying by it is exact for the rounding)
SM_VALID_MIN = 0.0       #: physical bounds of volumetric soil moisture (m³/m³)
SM_VALID_MAX = 1.0
_BLOCK = 1 << 18         # elements per scratch block (2 MiB of float64)


def encode_int16(values: npt.ArrayLike, out: np.ndarray | None = None, *, valid_min: float = SM_VALID_MIN,
                 valid_max: float = SM_VALID_MAX) -> np.ndarray:
    """Pack floats (m³/m³) into int16: ``rint(clip(v, min, max) / SCALE)``; NaN → FILL.

    ``out`` (a C-contiguous int16 array of the same shape, e.g. a preallocated shard buffer) is
    filled in place and returned. ±inf are clipped like any out-of-range value.
    """
    v = np.asarray(values)
    if not np.issubdtype(v.dtype, np.floating):
        v = v.astype(np.float64)
    lo, hi = int(np.ceil(valid_min * INV_SCALE - 1e-9)), int(np.floor(valid_max * INV_SCALE + 1e-9))
    if not (FILL < lo <= hi <= np.iinfo(np.int16).max):
        raise ValueError(f"valid range [{valid_min}, {valid_max}] does not fit int16 with scale {SCALE}")
    if out is None:
        out = np.empty(v.shape, dtype=np.int16)
    elif out.dtype != np.int16 or out.shape != v.shape or not out.flags.c_contiguous:
        raise ValueError("out must be a C-contiguous int16 array of the input's shape")
    src = np.ascontiguousarray(v).reshape(-1)
    dst = out.reshape(-1)
    buf = np.empty(min(_BLOCK, max(src.size, 1)), dtype=np.float64)
    for s in range(0, src.size, _BLOCK):
        e = min(s + _BLOCK, src.size)
        b = buf[: e - s]
        np.multiply(src[s:e], INV_SCALE, out=b, dtype=np.float64, casting="unsafe")
        nan = np.isnan(b)
        np.clip(b, lo, hi, out=b)
        np.rint(b, out=b)
        b[nan] = FILL
        dst[s:e] = b  # exact: every value is an integer within int16
    return out


def decode_int16(q: npt.ArrayLike, dtype: npt.DTypeLike = np.float32) -> npt.NDArray[np.floating]:
    """Unpack int16 to floats (m³/m³): ``q * SCALE``; FILL → NaN."""
    packed = np.asarray(q)
    out = packed.astype(np.float64) * SCALE
    out[packed == FILL] = np.nan
    return out.astype(dtype, copy=False)
