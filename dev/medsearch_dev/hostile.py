"""Hostile inputs for tests: decompression bombs built in a few megabytes without ever holding the inflated data.

Test helpers only (like :mod:`medsearch_dev.testing`); nothing in a deployable imports this module.
"""

from __future__ import annotations

import struct
import zlib

_ZERO_BLOCK = 16 * 1024 * 1024


def deflated_dicom_bomb(*, rows: int = 128, columns: int = 128, zeros: int = 3 * 1024**3) -> bytes:
    """A Part 10 file with the Deflated Explicit VR Little Endian transfer syntax whose dataset declares
    ``rows`` x ``columns`` 16-bit pixels but whose pixel data holds ``zeros`` zero bytes (default 3 GiB),
    deflating to about a thousandth of that. The stream is built with full flushes, so one compressed zero block
    is repeated instead of compressing gigabytes."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    elements = pydicom.filebase.DicomBytesIO()
    elements.is_implicit_VR = False
    elements.is_little_endian = True
    pydicom.filewriter.write_dataset(elements, ds)
    body = elements.getvalue()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = pydicom.filebase.DicomBytesIO()
    head.write(b"\0" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(head, meta)

    pixel_header = b"\xe0\x7f\x10\x00OB\x00\x00" + struct.pack("<I", min(zeros, 0xFFFFFFFE) & ~1)
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [comp.compress(body + pixel_header), comp.flush(zlib.Z_FULL_FLUSH)]
    block = comp.compress(b"\0" * _ZERO_BLOCK) + comp.flush(zlib.Z_FULL_FLUSH)
    blocks, rest = divmod(zeros, _ZERO_BLOCK)
    out.extend([block] * blocks)
    out.append(comp.compress(b"\0" * rest) + comp.flush())
    return head.getvalue() + b"".join(out)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` (1-bit grey) followed by a tiny IDAT: Pillow reads the
    size at open; anything that decodes it trusts the header."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + chunk(b"IEND", b""))
