"""Released files: metadata stripped, a watermark where the format allows, and a signed manifest.

The watermark names the release id: a PNG ``tEXt`` chunk, a JPEG comment, or the PDF document
information. ``enclave exports verify`` reads it back when a file's hash is not known (the file was
changed after release). PIL and pypdf are imported by the functions that use them, so that
verifying a file whose hash is known needs neither.
"""

from __future__ import annotations

import io
import re

WATERMARK_KEY = "enclave-release"
PDF_KEY = "/EnclaveRelease"
_RELEASE_ID = re.compile(r"^[0-9a-f]{32}$")


def prepare(data: bytes, sniffed: str, release_id: str) -> tuple[bytes, bool]:
    """The bytes to hand out and whether they carry a watermark."""
    from PIL import Image, PngImagePlugin
    from pypdf import PdfReader, PdfWriter

    if sniffed == "png":
        with Image.open(io.BytesIO(data)) as img:
            info = PngImagePlugin.PngInfo()
            info.add_text(WATERMARK_KEY, release_id)
            out = io.BytesIO()
            img.save(out, "PNG", pnginfo=info)  # only our chunk: text chunks and EXIF are dropped
            return out.getvalue(), True
    if sniffed == "jpeg":
        with Image.open(io.BytesIO(data)) as img:
            out = io.BytesIO()
            # quality="keep" reuses the quantisation tables; EXIF, XMP and comments are not copied.
            img.save(out, "JPEG", quality="keep", comment=f"{WATERMARK_KEY}={release_id}".encode())
            return out.getvalue(), True
    if sniffed == "pdf":
        writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
        if "/Metadata" in writer._root_object:  # XMP metadata stream
            del writer._root_object["/Metadata"]
        writer._info = None
        writer.add_metadata({PDF_KEY: release_id})
        out = io.BytesIO()
        writer.write(out)
        return out.getvalue(), True
    return data, False


def read_watermark(data: bytes) -> str | None:
    """The release id a file carries, if any."""
    from PIL import Image
    from pypdf import PdfReader

    try:
        if data.startswith(b"\x89PNG") or data.startswith(b"\xff\xd8\xff"):
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                value = img.info.get(WATERMARK_KEY) or ""
                comment = img.info.get("comment", b"")
                if not value and isinstance(comment, bytes) and comment.startswith(WATERMARK_KEY.encode() + b"="):
                    value = comment.split(b"=", 1)[1].decode()
        elif data.startswith(b"%PDF-"):
            value = str((PdfReader(io.BytesIO(data)).metadata or {}).get(PDF_KEY, ""))
        else:
            return None
    except Exception:  # an unreadable file simply carries no readable watermark
        return None
    return value if _RELEASE_ID.match(value) else None
