"""Small real files of the kinds Bimplus users keep (generated, deterministic), and
deterministic pseudo-random content for benchmarks.

Every generator returns the complete file as bytes; the files are valid for their format (a PDF
with a correct cross-reference table, a PNG with checksums, DOCX/XLSX as real Office Open XML
zips, an ISO 10303-21 IFC file, a gzip-compressed tar).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from xml.sax.saxutils import escape

PSEUDO_RANDOM_CHUNK = 1024 * 1024


def pseudo_random_chunks(seed: int | str, size: int) -> Iterator[bytes]:
    """``size`` deterministic pseudo-random bytes in chunks of 1 MiB (the last one shorter).

    Chunk ``i`` depends only on ``(seed, i)``, so ``pseudo_random_range`` can recompute any part.
    """
    index = 0
    left = size
    while left > 0:
        n = min(PSEUDO_RANDOM_CHUNK, left)
        yield random.Random(f"bimfs:{seed}:{index}").randbytes(PSEUDO_RANDOM_CHUNK)[:n]
        left -= n
        index += 1


def pseudo_random_range(seed: int | str, offset: int, length: int) -> bytes:
    """Bytes ``offset .. offset+length`` of the content ``pseudo_random_chunks(seed, ...)``."""
    out = bytearray()
    index = offset // PSEUDO_RANDOM_CHUNK
    skip = offset % PSEUDO_RANDOM_CHUNK
    while len(out) < length:
        block = random.Random(f"bimfs:{seed}:{index}").randbytes(PSEUDO_RANDOM_CHUNK)
        out += block[skip : skip + length - len(out)]
        skip = 0
        index += 1
    return bytes(out)


def text_file(*lines: str) -> bytes:
    """A UTF-8 text file with a final newline."""
    return ("\n".join(lines) + "\n").encode()


def csv_file(rows: list[list[str | int | float]]) -> bytes:
    """A CSV file (comma separated, CRLF line ends as spreadsheets write them)."""
    out = []
    for row in rows:
        cells = []
        for cell in row:
            text = str(cell)
            if any(c in text for c in ',"\n'):
                text = '"' + text.replace('"', '""') + '"'
            cells.append(text)
        out.append(",".join(cells))
    return ("\r\n".join(out) + "\r\n").encode()


def pdf_file(title: str, *lines: str) -> bytes:
    """A one-page PDF 1.4 showing ``title`` and ``lines`` (Helvetica, ASCII text)."""

    def esc(text: str) -> str:
        text = text.encode("ascii", "replace").decode()
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    ops = [f"BT /F1 20 Tf 72 770 Td ({esc(title)}) Tj ET"]
    for i, line in enumerate(lines):
        ops.append(f"BT /F1 11 Tf 72 {740 - 16 * i} Td ({esc(line)}) Tj ET")
    stream = "\n".join(ops).encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Title (" + esc(title).encode() + b") /Producer (bimfs emulator) >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n" % (len(objects) + 1)
    out += b"0000000000 65535 f \n"
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def png_file(width: int, height: int, rgb: tuple[int, int, int], stripe: int = 0) -> bytes:
    """An RGB PNG of one colour with a diagonal stripe every ``stripe`` pixels (0: none)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            if stripe and (x + y) % stripe == 0:
                rows += bytes((255 - rgb[0], 255 - rgb[1], 255 - rgb[2]))
            else:
                rows += bytes(rgb)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + chunk(b"IEND", b"")
    )


_ZIP_TIME = (2024, 3, 4, 9, 0, 0)


def _zip(entries: list[tuple[str, str]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in entries:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text.encode())
    return buf.getvalue()


_XML = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_DOC_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def docx_file(*paragraphs: str) -> bytes:
    """A Word document (Office Open XML) with one paragraph per argument."""
    ct = (
        _XML + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/'
        'vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/word/document.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'
    )
    rels = (
        _XML + f'<Relationships xmlns="{_REL_NS}"><Relationship Id="rId1" '
        f'Type="{_DOC_REL}/officeDocument" Target="word/document.xml"/></Relationships>'
    )
    body = "".join(f"<w:p><w:r><w:t>{escape(p)}</w:t></w:r></w:p>" for p in paragraphs)
    doc = (
        _XML + '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        f"<w:body>{body}</w:body></w:document>"
    )
    return _zip([("[Content_Types].xml", ct), ("_rels/.rels", rels), ("word/document.xml", doc)])


def _column(index: int) -> str:
    name = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        name = chr(65 + rem) + name
    return name


def xlsx_file(rows: list[list[str | int | float]]) -> bytes:
    """An Excel workbook (Office Open XML) with one sheet holding ``rows``."""
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    ct = (
        _XML + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/'
        'vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>'
    )
    rels = (
        _XML + f'<Relationships xmlns="{_REL_NS}"><Relationship Id="rId1" '
        f'Type="{_DOC_REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
    )
    workbook = (
        _XML + f'<workbook xmlns="{main}" xmlns:r="{_DOC_REL}"><sheets>'
        '<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
    )
    wb_rels = (
        _XML + f'<Relationships xmlns="{_REL_NS}"><Relationship Id="rId1" '
        f'Type="{_DOC_REL}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'
    )
    xml_rows = []
    for r, row in enumerate(rows, start=1):
        cells = []
        for c, value in enumerate(row):
            ref = f"{_column(c)}{r}"
            if isinstance(value, (int, float)):
                cells.append(f'<c r="{ref}"><v>{value}</v></c>')
            else:
                cells.append(f'<c r="{ref}" t="inlineStr"><is><t>{escape(value)}</t></is></c>')
        xml_rows.append(f'<row r="{r}">{"".join(cells)}</row>')
    sheet = (
        _XML + f'<worksheet xmlns="{main}"><sheetData>{"".join(xml_rows)}</sheetData></worksheet>'
    )
    return _zip(
        [
            ("[Content_Types].xml", ct),
            ("_rels/.rels", rels),
            ("xl/workbook.xml", workbook),
            ("xl/_rels/workbook.xml.rels", wb_rels),
            ("xl/worksheets/sheet1.xml", sheet),
        ]
    )


_IFC_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_$"


def _ifc_guid(key: str) -> str:
    digest = hashlib.sha256(key.encode()).digest()
    # 128 bits as 22 digits of the IFC base-64 alphabet (the first digit carries 2 bits).
    number = int.from_bytes(digest[:16], "big")
    chars = []
    for _ in range(22):
        number, rem = divmod(number, 64)
        chars.append(_IFC_CHARS[rem])
    return "".join(reversed(chars))


def ifc_file(file_name: str, project: str, revision: int, timestamp: str) -> bytes:
    """A minimal IFC4 model (ISO 10303-21) with a project, a site and a building."""

    def s(text: str) -> str:
        return text.replace("'", "''")

    lines = [
        "ISO-10303-21;",
        "HEADER;",
        "FILE_DESCRIPTION(('ViewDefinition [ReferenceView]'),'2;1');",
        f"FILE_NAME('{s(file_name)}','{timestamp}',('Demo User'),('bimfs'),"
        "'bimfs emulator','bimfs emulator','');",
        "FILE_SCHEMA(('IFC4'));",
        "ENDSEC;",
        "DATA;",
        "#1=IFCPERSON($,'User','Demo',$,$,$,$,$);",
        "#2=IFCORGANIZATION($,'bimfs',$,$,$);",
        "#3=IFCPERSONANDORGANIZATION(#1,#2,$);",
        "#4=IFCAPPLICATION(#2,'1.0','bimfs emulator','bimfs');",
        "#5=IFCOWNERHISTORY(#3,#4,$,.ADDED.,$,$,$,1709542800);",
        "#6=IFCCARTESIANPOINT((0.,0.,0.));",
        "#7=IFCAXIS2PLACEMENT3D(#6,$,$);",
        "#8=IFCGEOMETRICREPRESENTATIONCONTEXT($,'Model',3,1.E-05,#7,$);",
        "#9=IFCSIUNIT(*,.LENGTHUNIT.,.MILLI.,.METRE.);",
        "#10=IFCUNITASSIGNMENT((#9));",
        f"#11=IFCPROJECT('{_ifc_guid(file_name + project)}',#5,'{s(project)}',"
        f"'Revision {revision}',$,$,$,(#8),#10);",
        "#12=IFCLOCALPLACEMENT($,#7);",
        f"#13=IFCSITE('{_ifc_guid(file_name + 'site')}',#5,'Site',$,$,#12,$,$,.ELEMENT.,"
        "$,$,$,$,$);",
        f"#14=IFCBUILDING('{_ifc_guid(file_name + 'building')}',#5,'Building {revision}',$,$,"
        "#12,$,$,.ELEMENT.,$,$,$);",
        f"#15=IFCRELAGGREGATES('{_ifc_guid(file_name + 'rel1')}',#5,$,$,#11,(#13));",
        f"#16=IFCRELAGGREGATES('{_ifc_guid(file_name + 'rel2')}',#5,$,$,#13,(#14));",
        "ENDSEC;",
        "END-ISO-10303-21;",
    ]
    return ("\n".join(lines) + "\n").encode()


def tar_gz_file(files: list[tuple[str, bytes]]) -> bytes:
    """A gzip-compressed tar archive of ``(name, content)`` members (fixed times)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 1709542800
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()
