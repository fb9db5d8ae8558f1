"""The shared decode/preprocess pipeline (medsearch.imaging) on real DICOM test files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medsearch.imaging import (
    ImageDecodeError,
    decode_dicom,
    decode_image_bytes,
    looks_like_dicom,
    preprocess,
    render_raster,
    thumbnail_png,
)


def _read(name: str) -> bytes:
    path = get_testdata_file(name, download=False)
    assert path, f"{name} not installed"
    with open(str(path), "rb") as fh:
        return fh.read()


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "RG1_UNCR.dcm", "RG1_J2KR.dcm", "SC_rgb.dcm",
                                  "JPEG2000.dcm", "MR_small_RLE.dcm", "emri_small.dcm"])
def test_decodes_real_files_into_unit_range(name: str) -> None:
    data = _read(name)
    assert looks_like_dicom(data)
    img = decode_image_bytes(data, source=name)
    assert img.dtype == np.float32 and img.min() >= 0.0 and img.max() <= 1.0
    assert img.max() > img.min()


def test_monochrome1_chest_film_is_displayed_with_dark_lungs() -> None:
    dec = decode_dicom(_read("RG1_UNCR.dcm"), source="RG1_UNCR.dcm")
    assert str(dec.dataset.PhotometricInterpretation) == "MONOCHROME1"
    img = dec.image
    h, w = img.shape
    lungs = np.concatenate([img[h // 3: 2 * h // 3, w // 5: 2 * w // 5].ravel(),
                            img[h // 3: 2 * h // 3, 3 * w // 5: 4 * w // 5].ravel()])
    spine = img[h // 3: 2 * h // 3, int(w * 0.47): int(w * 0.53)]
    assert lungs.mean() < spine.mean()


def test_lossless_jpeg2000_twin_decodes_to_the_same_image() -> None:
    a = decode_dicom(_read("RG1_UNCR.dcm")).image
    b = decode_dicom(_read("RG1_J2KR.dcm")).image
    assert a.shape == b.shape and np.abs(a - b).max() < 1e-6


@pytest.mark.parametrize("family", [
    ["OBXXXX1A.dcm", "OBXXXX1A_expb.dcm", "OBXXXX1A_rle.dcm"],  # 16-bit palette; little, big endian, RLE
    ["OBXXXX1A_2frame.dcm", "OBXXXX1A_expb_2frame.dcm", "OBXXXX1A_rle_2frame.dcm"],  # multi-frame palette
    ["gdcm-US-ALOKA-16.dcm", "gdcm-US-ALOKA-16_big.dcm"],  # segmented palette
])
def test_palette_colour_decodes_to_rgb_the_same_in_every_encoding(family: list[str]) -> None:
    images = [decode_dicom(_read(name), source=name).image for name in family]
    first = images[0]
    assert first.ndim == 3 and first.shape[-1] == 3 and first.dtype == np.float32
    assert 0.0 <= first.min() and first.max() <= 1.0 and first.max() > 0.9  # full-range colour, not 8-of-16 bits
    for name, img in zip(family[1:], images[1:], strict=True):
        assert img.shape == first.shape and np.abs(img - first).max() < 1e-6, name


def test_palette_lookup_maps_stored_values_through_the_tables() -> None:
    dec = decode_dicom(_read("OBXXXX1A.dcm"), source="OBXXXX1A.dcm")
    ds, img = dec.dataset, dec.image
    stored = np.asarray(ds.pixel_array)
    value = int(stored[300, 400])
    red = np.frombuffer(ds.RedPaletteColorLookupTableData, "<u2")
    first_mapped = int(ds.RedPaletteColorLookupTableDescriptor[1])
    expected = red[min(max(value - first_mapped, 0), len(red) - 1)] / 65535.0
    assert img[300, 400, 0] == pytest.approx(expected, abs=1e-6)


def test_dataset_without_transfer_syntax_decodes_as_parsed() -> None:
    # OT-PAL-8-face.dcm has no (0002,0010) in its meta header; the parser's detected encoding is used.
    img = decode_dicom(_read("OT-PAL-8-face.dcm"), source="OT-PAL-8-face.dcm").image
    assert img.shape == (480, 640, 3) and img.std() > 0.1


def test_png_rendering_preprocesses_identically() -> None:
    img = decode_image_bytes(_read("CT_small.dcm"))
    from_png = decode_image_bytes(render_raster(img, "image/png"))
    assert np.array_equal(preprocess(img, 96), preprocess(from_png, 96))


def test_preprocess_shape_normalisation_and_determinism() -> None:
    img = decode_image_bytes(_read("MR_small.dcm"))
    a = preprocess(img, 224)
    assert a.shape == (3, 224, 224) and a.dtype == np.float32
    assert np.array_equal(a, preprocess(img, 224))
    assert np.array_equal(a[0] * 0.229 + 0.485, a[1] * 0.224 + 0.456) or np.allclose(
        a[0] * 0.229 + 0.485, a[1] * 0.224 + 0.456, atol=1e-6)


def test_thumbnail_longest_side_256_keeps_aspect() -> None:
    img = decode_image_bytes(_read("RG1_UNCR.dcm"))
    png = thumbnail_png(img)
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and max(im.size) == 256
        h, w = img.shape
        assert abs(im.size[0] / im.size[1] - w / h) < 0.01


def test_errors_are_typed_and_name_the_source() -> None:
    with pytest.raises(ImageDecodeError) as err:
        decode_image_bytes(b"hello world, not an image", source="notes.txt")
    assert err.value.reason == "not_an_image" and "notes.txt" in str(err.value)
    with pytest.raises(ImageDecodeError) as err:
        decode_image_bytes(b"", source="empty.dcm")
    assert err.value.reason == "not_an_image"
    truncated = _read("CT_small.dcm")[:2000]
    with pytest.raises(ImageDecodeError) as err:
        decode_image_bytes(truncated, source="cut.dcm")
    assert err.value.reason in ("undecodable", "no_pixel_data")
    with pytest.raises(ImageDecodeError) as err:
        decode_image_bytes(_read("rtplan.dcm"), source="rtplan.dcm")
    assert err.value.reason == "no_pixel_data"


# ---- hostile input: one size rule before any pixel is decoded ---------------------------------------------------


def test_deflated_bomb_is_refused_quickly_without_inflating_it() -> None:
    import time
    import tracemalloc

    from medsearch_dev.hostile import deflated_dicom_bomb

    from medsearch.imaging import check_image_limits

    bomb = deflated_dicom_bomb()  # 3 GiB of zeros behind a 128 x 128 header, ~3 MB on the wire
    assert len(bomb) < 8 * 1024 * 1024
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        with pytest.raises(ImageDecodeError, match="inflates to more than") as err:
            decode_image_bytes(bomb, source="bomb.dcm")
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.reason == "too_large" and "bomb.dcm" in str(err.value)
    assert elapsed < 1.0  # pydicom alone inflates all 3 GiB first (about 20 s)
    assert peak < 64 * 1024 * 1024
    with pytest.raises(ImageDecodeError, match="too large"):
        check_image_limits(bomb)


def test_deflated_header_declaring_too_many_pixels_is_refused_by_the_pixel_rule() -> None:
    from medsearch_dev.hostile import deflated_dicom_bomb

    with pytest.raises(ImageDecodeError, match="50000 x 50000 = 2500000000 pixels per frame exceeds the limit"):
        decode_dicom(deflated_dicom_bomb(rows=50000, columns=50000, zeros=1 << 20))


def test_a_real_deflated_file_still_decodes() -> None:
    img = decode_image_bytes(_read("image_dfl.dcm"), source="image_dfl.dcm")
    assert img.shape == (512, 512) and img.max() > img.min()


def test_limits_are_configurable_and_cover_frames() -> None:
    from medsearch.imaging import ImageLimits, check_image_limits

    data = _read("emri_small.dcm")  # 10 frames of 64 x 64
    check_image_limits(data)
    with pytest.raises(ImageDecodeError, match=r"64 x 64 x 10 frames = 40960 pixels exceeds the limit of 40000"):
        decode_dicom(data, limits=ImageLimits(max_total_pixels=40_000))
    with pytest.raises(ImageDecodeError, match="4096 pixels per frame exceeds the limit of 4000"):
        check_image_limits(data, limits=ImageLimits(max_frame_pixels=4000))


def test_png_beyond_pillows_bomb_limit_is_a_typed_refusal_not_a_crash() -> None:
    from medsearch_dev.hostile import png_header_only

    with pytest.raises(ImageDecodeError, match="the limit is 40000000 pixels") as err:
        decode_image_bytes(png_header_only(20000, 10000), source="big.png")  # 200 MP > Pillow's 179 MP
    assert err.value.reason == "too_large"


def test_png_below_pillows_limit_but_over_ours_is_refused_before_decoding() -> None:
    from medsearch_dev.hostile import png_header_only

    from medsearch.imaging import check_image_limits

    png = png_header_only(8000, 8000)  # 64 MP: Pillow would only warn and decode it
    for call in (lambda: decode_image_bytes(png), lambda: check_image_limits(png)):
        with pytest.raises(ImageDecodeError, match="8000 x 8000 = 64000000 pixels exceeds the limit of 40000000"):
            call()


def test_only_the_frame_used_is_decoded() -> None:
    """A multi-frame RLE object whose first frame is corrupt: the middle frame (the one used) still decodes."""
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(io.BytesIO(_read("emri_small_RLE.dcm")))
    frames = list(generate_frames(ds.PixelData, number_of_frames=10))
    frames[0] = b"\x00" * 8
    ds.PixelData = encapsulate(frames)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    middle = decode_dicom(buf.getvalue(), frame_policy="middle").image
    reference = decode_dicom(_read("emri_small_RLE.dcm"), frame_policy="middle").image
    assert np.array_equal(middle, reference)
    with pytest.raises(ImageDecodeError, match="undecodable"):
        decode_dicom(buf.getvalue(), frame_policy="first")


def _j2k_declaring(rows: int, columns: int) -> bytes:
    """JPEG2000.dcm (1024 x 256) with its codestream's SIZ patched to declare ``rows`` x ``columns``."""
    import struct

    import pydicom
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(io.BytesIO(_read("JPEG2000.dcm")))
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    at = frame.find(b"\xff\x4f\xff\x51")
    struct.pack_into(">II", frame, at + 8, columns, rows)  # Xsiz, Ysiz (offsets are 0)
    ds.PixelData = encapsulate([bytes(frame)])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_a_compressed_frame_declaring_more_pixels_than_the_dataset_is_refused_before_decoding() -> None:
    import time

    from medsearch.imaging import check_image_limits, codestream_size

    assert codestream_size(b"\xff\x4f\xff\x51" + bytes(4) + bytes.fromhex("0000010000000400") + bytes(8)) == (1024, 256)
    t0 = time.perf_counter()
    bomb = _j2k_declaring(60000, 60000)  # a decoder would allocate 3.6 G pixels
    for call in (lambda: decode_dicom(bomb), lambda: check_image_limits(bomb)):
        with pytest.raises(ImageDecodeError, match="60000 x 60000 = 3600000000 pixels per frame exceeds the limit"):
            call()
    bigger = _j2k_declaring(2048, 512)
    with pytest.raises(ImageDecodeError, match="declares 2048 x 512 pixels but the dataset 1024 x 256"):
        decode_dicom(bigger)
    assert time.perf_counter() - t0 < 5.0
    assert decode_dicom(_j2k_declaring(1024, 256)).image.shape == (1024, 256)  # the honest header still decodes
