"""Image decoding and preprocessing shared by the model server and the DICOM worker.

One pipeline for every input, so that a DICOM file and the PNG rendered from it give the same pixels:

``bytes --decode_image_bytes--> float32 display image in [0, 1] --to_uint8--> 8-bit display image
--preprocess--> float32 [3, S, S] ImageNet-normalised tensor``

DICOM decoding applies the modality LUT (rescale slope/intercept), then the VOI LUT or the first window
centre/width (else a robust percentile window), inverts MONOCHROME1 so that air is dark, and takes one frame of
multi-frame images (``frame_policy``), decoding only that frame. Nothing here is random: the same bytes always
give the same tensor. Only numpy, pydicom and Pillow are needed (no torch), so the worker image stays small.

Hostile input: every decode first applies one size rule (:class:`ImageLimits`, :func:`check_image_limits`) —
pixels per frame, rows x columns x frames, PNG/JPEG width x height (well below Pillow's own bomb limit) and the
inflated size of Deflated-transfer-syntax DICOM, which is measured by streaming inflation before pydicom (which
inflates the whole dataset in memory) ever sees it. A refusal is an :class:`ImageDecodeError` with reason
``too_large`` whose message names the limit. The gateway runs the same check before anything is sent on.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
THUMBNAIL_MAX_SIDE = 256

FramePolicy = Literal["middle", "first"]
FloatImage = NDArray[np.float32]
ByteImage = NDArray[np.uint8]


class ImageDecodeError(ValueError):
    """Input that cannot become an image. ``reason`` is a short machine-readable kind, the message says why.

    Reasons: ``not_an_image`` (neither DICOM nor PNG/JPEG), ``no_pixel_data``, ``undecodable`` (corrupt or
    truncated pixel data, or no decoder for the transfer syntax), ``unsupported`` (a photometric
    interpretation or shape we do not handle), ``too_large`` (over one of the :class:`ImageLimits`; the message
    names the limit), ``no_such_frame`` (a frame number the object does not have).
    """

    def __init__(self, source: str, reason: str, detail: str) -> None:
        super().__init__(f"{source}: {reason.replace('_', ' ')}: {detail}")
        self.source = source
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageLimits:
    """The one size rule applied before any pixel is decoded (documented in docs/security.md)."""

    max_frame_pixels: int = 40_000_000  # rows x columns of the frame decoded; PNG/JPEG width x height
    max_total_pixels: int = 1 << 30  # rows x columns x frames of a DICOM object (4096 frames of 512 x 512)
    max_inflated_bytes: int = 256 * 1024 * 1024  # Deflated transfer syntax: the dataset after inflation
    max_header_bytes: int = 16 * 1024 * 1024  # Deflated: inflated data elements before/after the pixel data


DEFAULT_LIMITS = ImageLimits()
_DEFLATED = "1.2.840.10008.1.2.1.99"
_INFLATE_CHUNK = 1 << 20
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian


@dataclass(frozen=True)
class DecodedDicom:
    dataset: Any  # pydicom.Dataset (pixel data left in place)
    image: FloatImage  # [H, W] grey or [H, W, 3] RGB, in [0, 1], display orientation (air dark)
    frames: int


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def looks_like_dicom(data: bytes) -> bool:
    """True for DICOM Part 10 files (``DICM`` after the preamble) and for preamble-less datasets."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return True
    if data[:8] == _PNG_MAGIC or data[:3] == _JPEG_MAGIC or len(data) < 8:
        return False
    # Raw (preamble-less) datasets start with a group 0x0002 or 0x0008 tag in little endian.
    return data[:2] in (b"\x02\x00", b"\x08\x00")


def _too_large(source: str, detail: str) -> ImageDecodeError:
    return ImageDecodeError(source, "too_large", detail)


def check_pixel_counts(rows: int, columns: int, frames: int, *, source: str = "<bytes>",
                       limits: ImageLimits = DEFAULT_LIMITS) -> None:
    """The pixel part of the rule: rows x columns per frame and rows x columns x frames."""
    per_frame = rows * columns
    if per_frame > limits.max_frame_pixels:
        raise _too_large(source, f"{rows} x {columns} = {per_frame} pixels per frame exceeds the limit of "
                                 f"{limits.max_frame_pixels} pixels")
    if per_frame * frames > limits.max_total_pixels:
        raise _too_large(source, f"{rows} x {columns} x {frames} frames = {per_frame * frames} pixels exceeds the "
                                 f"limit of {limits.max_total_pixels} pixels")


def _dataset_counts(ds: Any) -> tuple[int, int, int, int, int]:
    """(rows, columns, frames, samples per pixel, bits allocated) of a dataset; 0 where absent or unreadable."""

    def num(keyword: str, default: int) -> int:
        try:
            value = ds.get(keyword)
            return int(value) if value not in (None, "") else default
        except (TypeError, ValueError):
            return default

    return (num("Rows", 0), num("Columns", 0), max(1, num("NumberOfFrames", 1)), max(1, num("SamplesPerPixel", 1)),
            max(1, num("BitsAllocated", 8)))


def _meta_transfer_syntax(data: bytes) -> tuple[str | None, int]:
    """(TransferSyntaxUID, offset of the dataset) of a Part 10 file, read from its group 0002 (explicit VR LE)."""
    pos, ts = 132, None
    long_vrs = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
    while pos + 8 <= len(data):
        group, elem = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        vr = data[pos + 4:pos + 6]
        if vr in long_vrs:
            if pos + 12 > len(data):
                break
            (length,) = struct.unpack_from("<I", data, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            start = pos + 8
        if elem == 0x0010:
            ts = data[start:start + length].rstrip(b"\0 ").decode("ascii", "replace")
        pos = start + length
    return ts, pos


def _parse_prefix(prefix: bytes) -> Any | None:
    """The data elements of an inflated (explicit VR little endian) prefix up to the pixel data, or None while
    the prefix is still too short to hold them."""
    from pydicom.filereader import read_dataset

    fp = io.BytesIO(prefix)
    try:
        ds = read_dataset(fp, is_implicit_VR=False, is_little_endian=True,
                          stop_when=lambda tag, _vr, _length: tag == 0x7FE00010)
    except Exception:  # noqa: BLE001  # a truncated prefix fails in many ways: inflate more and retry
        return None
    at = fp.tell()
    return ds if prefix[at:at + 4] == _PIXEL_DATA_TAG else None  # stopped at the real pixel data, not a lookalike


def _check_deflated(body: bytes, source: str, limits: ImageLimits) -> None:
    """Inflate a Deflated dataset by streaming (never holding more than the header and one chunk), check the
    declared pixels, then refuse as soon as the inflated size passes what those pixels need (or the cap)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending = body
    prefix = bytearray()
    allowed: int | None = None
    total = 0
    while True:
        try:
            chunk = inflater.decompress(pending, _INFLATE_CHUNK)
        except zlib.error as err:
            raise ImageDecodeError(source, "undecodable", f"corrupt deflated dataset: {err}") from None
        pending = inflater.unconsumed_tail
        total += len(chunk)
        if allowed is None:
            prefix += chunk
            ds = _parse_prefix(bytes(prefix)) if _PIXEL_DATA_TAG in prefix else None
            if ds is not None:
                rows, cols, frames, samples, bits = _dataset_counts(ds)
                check_pixel_counts(rows, cols, frames, source=source, limits=limits)
                pixel_bytes = rows * cols * frames * samples * ((bits + 7) // 8)
                allowed = min(limits.max_inflated_bytes, len(prefix) + pixel_bytes + limits.max_header_bytes)
                if len(prefix) + pixel_bytes > limits.max_inflated_bytes:
                    raise _too_large(source, f"the deflated dataset declares {pixel_bytes} bytes of pixel data; "
                                             f"the limit after inflation is {limits.max_inflated_bytes} bytes")
                prefix = bytearray()
            elif len(prefix) > limits.max_header_bytes:
                raise _too_large(source, f"more than {limits.max_header_bytes} bytes of inflated data elements "
                                         "before the pixel data")
        if allowed is not None and total > allowed:
            raise _too_large(source, f"the deflated dataset inflates to more than {allowed} bytes (the limit for "
                                     f"its declared pixels; at most {limits.max_inflated_bytes} bytes)")
        if inflater.eof or (not chunk and not pending):
            return


_JPEG_SOF = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7}  # SOFn and JPEG-LS SOF55


def codestream_size(frame: bytes) -> tuple[int, int] | None:
    """(rows, columns) a compressed frame declares in its own header (JPEG, JPEG-LS, JPEG 2000 / HTJ2K), or None.

    Decoders allocate what the codestream says, not what the dataset's Rows/Columns say."""
    if frame[:2] == b"\xff\xd8":  # JPEG / JPEG-LS: walk the marker segments to the start of frame
        pos = 2
        while pos + 4 <= len(frame):
            if frame[pos] != 0xFF:
                return None
            marker = frame[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers
                pos += 2
                continue
            (length,) = struct.unpack_from(">H", frame, pos + 2)
            if marker in _JPEG_SOF and pos + 9 <= len(frame):
                rows, cols = struct.unpack_from(">HH", frame, pos + 5)
                return int(rows), int(cols)
            if marker == 0xDA:  # start of scan without a frame header
                return None
            pos += 2 + length
        return None
    at = frame.find(b"\xff\x4f\xff\x51", 0, 4096)  # JPEG 2000: SOC then SIZ (possibly inside JP2 boxes)
    if at >= 0 and at + 24 <= len(frame):
        xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", frame, at + 8)
        return max(0, ysiz - yosiz), max(0, xsiz - xosiz)
    return None


def _check_frames(ds: Any, indices: list[int] | None, source: str, limits: ImageLimits) -> None:
    """Compressed frames: the size their codestreams declare must pass the rule and fit the dataset's."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None or not ts.is_encapsulated or "PixelData" not in ds:
        return
    from pydicom.encaps import generate_frames, get_frame

    rows, cols, frames, _, _ = _dataset_counts(ds)
    try:
        if indices is None:
            chosen = list(generate_frames(ds.PixelData, number_of_frames=frames))
        else:
            chosen = [get_frame(ds.PixelData, i, number_of_frames=frames) for i in indices]
    except Exception:  # noqa: BLE001  # malformed encapsulation: the decoder reports it (undecodable)
        return
    for frame in chosen:
        size = codestream_size(frame)
        if size is None:
            continue
        h, w = size
        check_pixel_counts(h, w, 1, source=source, limits=limits)
        if h * w > max(rows * cols, 1):
            raise _too_large(source, f"a compressed frame declares {h} x {w} pixels but the dataset "
                                     f"{rows} x {cols}; refusing to decode more than the dataset declares")


def check_image_limits(data: bytes, *, source: str = "<bytes>", limits: ImageLimits = DEFAULT_LIMITS) -> None:
    """Refuse input over :class:`ImageLimits` (``ImageDecodeError`` reason ``too_large``) without decoding pixels.

    Cheap: DICOM headers are read without pixel data (Deflated datasets are inflated by streaming, bounded by the
    limits), PNG/JPEG only to their size. Input that is not an image passes: the decoder says what is wrong.
    """
    if looks_like_dicom(data):
        if data[128:132] == b"DICM":
            ts, start = _meta_transfer_syntax(data)
            if ts == _DEFLATED:
                _check_deflated(data[start:], source, limits)
                return
        import pydicom

        try:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=not data[128:132] == b"DICM")
        except Exception:  # noqa: BLE001  # unreadable headers are the decoder's business (it names the error)
            return
        rows, cols, frames, _, _ = _dataset_counts(ds)
        check_pixel_counts(rows, cols, frames, source=source, limits=limits)
        ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if ts is not None and ts.is_encapsulated:
            try:
                full = pydicom.dcmread(io.BytesIO(data), force=not data[128:132] == b"DICM")
            except Exception:  # noqa: BLE001  # unreadable: the decoder's business
                return
            _check_frames(full, None, source, limits)
    elif data[:8] == _PNG_MAGIC or data[:3] == _JPEG_MAGIC:
        _check_raster_size(data, source, limits)


def _check_raster_size(data: bytes, source: str, limits: ImageLimits) -> None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Image.DecompressionBombError as err:
        raise _too_large(source, f"{err}; the limit is {limits.max_frame_pixels} pixels") from None
    except Exception:  # noqa: BLE001  # unreadable rasters are the decoder's business
        return
    if w * h > limits.max_frame_pixels:
        raise _too_large(source, f"{w} x {h} = {w * h} pixels exceeds the limit of {limits.max_frame_pixels} pixels")


def preload() -> None:
    """Import the decoders now (pydicom takes about half a second), so that a first request is not slower."""
    import pydicom.filereader  # noqa: F401
    from PIL import Image

    Image.init()


def _read_dataset(data: bytes, source: str) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not data[128:132] == b"DICM")
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError) as err:
        raise ImageDecodeError(source, "undecodable", f"cannot parse DICOM: {err}") from None
    if "TransferSyntaxUID" not in ds.file_meta:
        # Old or raw files without a meta header: the encoding the parser detected is the only one possible
        # for native pixel data (compressed data always needs a header).
        from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

        implicit, little = getattr(ds, "original_encoding", (True, True))
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return ds


def _window(values: FloatImage, ds: Any) -> tuple[float, float]:
    """The display window ``(low, high)``: the dataset's first centre/width, else the 0.5-99.5 percentiles."""
    center = ds.get("WindowCenter")
    width = ds.get("WindowWidth")
    if center is not None and width is not None:
        c = float(center[0] if _is_multi(center) else center)
        w = float(width[0] if _is_multi(width) else width)
        if w > 1:
            return c - w / 2.0, c + w / 2.0
    lo, hi = np.percentile(values, [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    return float(lo), float(hi)


def _is_multi(v: Any) -> bool:
    return isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue"


WindowFunction = Literal["linear", "linear-exact", "sigmoid"]


@dataclass(frozen=True)
class Window:
    """An explicit VOI window (DICOM PS3.3 C.11.2.1.2): centre and width in modality-LUT output units (e.g.
    Hounsfield units for CT), and the VOI LUT function. Replaces the dataset's own VOI LUT / window."""

    center: float
    width: float
    function: WindowFunction = "linear"


def apply_window(values: FloatImage, window: Window) -> FloatImage:
    """Modality values -> [0, 1] through an explicit window (the PS3.3 C.11.2.1.2 formulas, output range 0-1)."""
    c, w = float(window.center), float(window.width)
    if window.function == "sigmoid":
        out = 1.0 / (1.0 + np.exp(-4.0 * (values - c) / max(w, 1e-6)))
    elif window.function == "linear-exact":
        out = (values - (c - w / 2.0)) / max(w, 1e-6)
    else:  # linear: width >= 1, the half-pixel offsets of the standard
        w = max(w, 1.0)
        out = ((values - (c - 0.5)) / (w - 1.0) + 0.5) if w > 1.0 else (values > c - 0.5).astype(np.float32)
    return np.asarray(np.clip(out, 0.0, 1.0), dtype=np.float32)


def decode_dicom(data: bytes, *, source: str = "<bytes>", frame_policy: FramePolicy = "middle",
                 limits: ImageLimits = DEFAULT_LIMITS, frame: int | None = None,
                 window: Window | None = None) -> DecodedDicom:
    """Decode DICOM bytes into a display image in [0, 1] (see module docstring); only the frame used is decoded.

    ``frame`` (0-based) picks a frame instead of ``frame_policy``; ``window`` replaces the dataset's VOI LUT /
    window for greyscale images (colour images have no VOI transform and ignore it)."""
    from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

    if data[128:132] == b"DICM" and _meta_transfer_syntax(data)[0] == _DEFLATED:
        check_image_limits(data, source=source, limits=limits)  # before pydicom inflates it all in memory
    ds = _read_dataset(data, source)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageDecodeError(source, "no_pixel_data", "the dataset has no pixel data")
    rows, cols, frames, _, _ = _dataset_counts(ds)
    check_pixel_counts(rows, cols, frames, source=source, limits=limits)
    if frame is not None and not 0 <= frame < frames:
        raise ImageDecodeError(source, "no_such_frame", f"frame {frame + 1} requested; the object has {frames}")
    index = frame if frame is not None else (frames // 2 if frame_policy == "middle" else 0) if frames > 1 else 0
    _check_frames(ds, [index], source, limits)
    try:
        if frames > 1:
            ds.pixel_array_options(index=index)
        arr = np.asarray(ds.pixel_array)
    except Exception as err:  # noqa: BLE001  # pydicom raises many types (missing decoder, truncated data)
        raise ImageDecodeError(source, "undecodable", f"cannot decode pixel data: {err}") from None

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)

    if samples == 3:
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ImageDecodeError(source, "unsupported", f"colour pixel array of shape {arr.shape}")
        # pydicom converts YBR to RGB by default; scale by the stored bit depth.
        bits = int(ds.get("BitsStored", 8) or 8)
        rgb = arr.astype(np.float32) / float((1 << bits) - 1)
        return DecodedDicom(ds, np.clip(rgb, 0.0, 1.0).astype(np.float32), frames)
    if samples != 1 or arr.ndim != 2:
        raise ImageDecodeError(source, "unsupported", f"{photometric} pixel array of shape {arr.shape}")
    if photometric == "PALETTE COLOR":
        return DecodedDicom(ds, _palette_to_rgb(arr, ds, source), frames)

    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    if window is not None:
        img = apply_window(values, window)
        if photometric == "MONOCHROME1":
            img = (1.0 - img).astype(np.float32)
        return DecodedDicom(ds, img, frames)
    if "VOILUTSequence" in ds:
        values = np.asarray(apply_voi_lut(values, ds), dtype=np.float32)
        lo, hi = float(values.min()), float(values.max())
    else:
        lo, hi = _window(values, ds)
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        img = np.zeros(values.shape, dtype=np.float32)
    else:
        img = np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    if photometric == "MONOCHROME1":
        img = (1.0 - img).astype(np.float32)
    return DecodedDicom(ds, img, frames)


def _palette_to_rgb(arr: NDArray[Any], ds: Any, source: str) -> FloatImage:
    """PALETTE COLOR → RGB in [0, 1] through the dataset's (plain or segmented) colour lookup tables."""
    from pydicom.pixels.processing import apply_color_lut

    descriptor = ds.get("RedPaletteColorLookupTableDescriptor")
    bits = int(descriptor[2]) if descriptor is not None and len(descriptor) == 3 else 16
    encoding = getattr(ds, "original_encoding", (None, True))
    if bits == 16 and encoding[1] is False:
        # pydicom 3.0 reads 16-bit OW lookup-table data of big-endian files without swapping its bytes.
        for colour in ("Red", "Green", "Blue"):
            elem = ds.get(f"{colour}PaletteColorLookupTableData")
            if elem is not None and isinstance(elem, bytes):
                ds[f"{colour}PaletteColorLookupTableData"].value = np.frombuffer(elem, ">u2").astype("<u2").tobytes()
    try:
        rgb = np.asarray(apply_color_lut(arr, ds), dtype=np.float32)
    except Exception as err:  # noqa: BLE001  # missing/malformed LUT elements raise several types
        raise ImageDecodeError(source, "unsupported", f"PALETTE COLOR lookup table unusable: {err}") from None
    peak = float((1 << (8 if bits == 8 else 16)) - 1)
    return np.clip(rgb / peak, 0.0, 1.0).astype(np.float32)


def decode_raster(data: bytes, *, source: str = "<bytes>", limits: ImageLimits = DEFAULT_LIMITS) -> FloatImage:
    """Decode PNG/JPEG (anything Pillow reads) into [0, 1]: grey stays [H, W], colour becomes [H, W, 3]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > limits.max_frame_pixels:
                raise _too_large(source, f"{w} x {h} = {w * h} pixels exceeds the limit of "
                                         f"{limits.max_frame_pixels} pixels")
            im.load()
            if im.mode in ("L", "I", "I;16", "I;16B", "F", "1", "LA"):
                a = np.asarray(im.convert("F") if im.mode != "L" else im, dtype=np.float32)
                peak = 255.0 if im.mode in ("L", "LA", "1") else max(float(a.max()), 1.0)
                return np.clip(a / peak, 0.0, 1.0).astype(np.float32)
            return (np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).astype(np.float32)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(source, "not_an_image", "not DICOM, PNG or JPEG") from None
    except Image.DecompressionBombError as err:  # Pillow's own ceiling, never a 500
        raise _too_large(source, f"{err}; the limit is {limits.max_frame_pixels} pixels") from None
    except (OSError, ValueError, SyntaxError) as err:  # a raster Pillow recognised but could not read
        raise ImageDecodeError(source, "undecodable", f"corrupt or truncated image ({err})") from None


def decode_image_bytes(data: bytes, *, source: str = "<bytes>", frame_policy: FramePolicy = "middle",
                       limits: ImageLimits = DEFAULT_LIMITS) -> FloatImage:
    """DICOM, PNG or JPEG bytes → display image in [0, 1]."""
    if not data:
        raise ImageDecodeError(source, "not_an_image", "empty input")
    if looks_like_dicom(data):
        return decode_dicom(data, source=source, frame_policy=frame_policy, limits=limits).image
    return decode_raster(data, source=source, limits=limits)


def to_uint8(image: FloatImage) -> ByteImage:
    """[0, 1] float → 8-bit, rounding half up (the same rounding PNG rendering uses)."""
    return np.asarray(np.clip(np.floor(image * 255.0 + 0.5), 0, 255), dtype=np.uint8)


def _pil(image: FloatImage | ByteImage) -> Any:
    from PIL import Image

    a = image if image.dtype == np.uint8 else to_uint8(image.astype(np.float32))
    return Image.fromarray(a, mode="L" if a.ndim == 2 else "RGB")


def preprocess(image: FloatImage | ByteImage, size: int = 224) -> FloatImage:
    """Display image → float32 ``[3, size, size]``, ImageNet-normalised.

    The image is first quantised to 8 bits (so a DICOM and its PNG rendering agree), padded to a square with
    black (no part of the anatomy is cropped), resized with bilinear filtering, and grey is copied to 3 channels.
    """
    from PIL import Image

    im = _pil(image)
    w, h = im.size
    side = max(w, h)
    if w != h:
        canvas = Image.new(im.mode, (side, side), 0)
        canvas.paste(im, ((side - w) // 2, (side - h) // 2))
        im = canvas
    im = im.resize((size, size), Image.Resampling.BILINEAR)
    a = np.asarray(im, dtype=np.float32) / 255.0
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    a = (a - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32)


def thumbnail_png(image: FloatImage | ByteImage, max_side: int = THUMBNAIL_MAX_SIDE) -> bytes:
    """A PNG whose longest side is ``max_side`` (never upscaled), aspect ratio kept."""
    from PIL import Image

    im = _pil(image)
    w, h = im.size
    scale = min(1.0, max_side / float(max(w, h)))
    if scale < 1.0:
        im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def render_raster(image: FloatImage | ByteImage, media_type: Literal["image/png", "image/jpeg"], *,
                  quality: int = 90) -> bytes:
    """Full-resolution 8-bit PNG (fast zlib level) or JPEG of a display image (the DICOMweb rendered frames)."""
    buf = io.BytesIO()
    if media_type == "image/jpeg":
        _pil(image).save(buf, format="JPEG", quality=max(1, min(100, quality)))
    else:
        _pil(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
