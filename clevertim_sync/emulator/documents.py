"""The emulated account's documents: folders, files, linked files, the records' links to them,
and contact photos as small real images.

Owns: the seeded folders (string ids "f1001", nested), files (in those folders), linked files
(Dropbox, Google Drive), which contacts, companies, cases, opportunities and notes carry `files`
and `lfiles` lists (and which contacts have a `cphoto`), and the bytes of a photo. Deterministic:
a function of the account's size, the seed and each record's id, drawn from a random stream of
its own so that the rest of the seeded account stays byte for byte what it was.
"""

from __future__ import annotations

import functools
import random
import struct
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

Record = dict[str, Any]
# Which records carry documents: (resource, every how many ids).
_EVERY = {"contact": 5, "company": 3, "case": 4, "opportunity": 6, "note": 7}
_PHOTO_EVERY = 4  # contacts whose id % 4 == 1 have a photo
_STAMP = "2024-03-01T09:00:00Z"
_SALT = 0xD0C5


def sizes(contacts: int) -> tuple[int, int, int]:
    """(folders, files, linked files) of an account of `contacts` contacts."""
    return 3 + contacts // 50, 2 + contacts // 10, 1 + contacts // 20


def folder_id(i: int) -> str:
    return f"f{1001 + i}"


def next_folder_id(existing: Iterable[Any]) -> str:
    """The id a new folder gets: one past the highest "f<number>" held."""
    numbers = [int(k[1:]) for k in existing if isinstance(k, str) and k[:1] == "f" and k[1:].isdigit()]
    return f"f{max(numbers, default=1000) + 1}"


def _common(rec: Record) -> Record:
    rec.update({"ao": _STAMP, "lm": _STAMP, "is_private": False, "gid": 0, "puser": None})
    return rec


def iter_documents(contacts: int, seed: int) -> Iterator[tuple[str, Record]]:
    """Every folder, file and linked file, as (resource name, record)."""
    rng = random.Random(seed ^ _SALT)
    n_folders, n_files, n_links = sizes(contacts)
    for i in range(n_folders):
        # f1001 is the root's only child; each later folder sits under an earlier one: nesting.
        parent = None if i == 0 else folder_id(rng.randrange(i))
        name = "Documents" if i == 0 else f"Folder {i} {rng.choice(['Verträge', 'Offres', '見積', 'Q3'])}"
        yield "folder", _common({"id": folder_id(i), "name": name, "parentId": parent, "is_dir": True})
    for i in range(1, n_files + 1):
        ext = rng.choice(["pdf", "docx", "xlsx", "png"])
        rec = {"id": i, "name": f"{rng.choice(['contract', 'proposal', 'Angebot', 'facture'])}-{i}.{ext}"}
        rec["parentId"] = folder_id(rng.randrange(n_folders))
        yield "file", _common(rec)
    for i in range(1, n_links + 1):
        system = rng.choice(["D", "G"])
        where = "https://www.dropbox.com/s/" if system == "D" else "https://drive.google.com/file/d/"
        rec = {
            "id": i,
            "name": f"shared-{i}.{rng.choice(['pdf', 'pptx'])}",
            "sys": system,
            "size": rng.randint(1_000, 5_000_000),
            "link": f"{where}doc{i}",
            "icon": "dropbox" if system == "D" else "gdrive",
        }
        yield "linkedfile", _common(rec)


def links(resource: str, rid: int, contacts: int) -> tuple[list[int], list[int]]:
    """The (files, lfiles) lists the record `rid` of `resource` carries: a pure function of the
    id, so it needs no random draw of the main stream."""
    every = _EVERY.get(resource)
    if every is None or rid % every:
        return [], []
    _, n_files, n_links = sizes(contacts)
    files = sorted({(rid * 7) % n_files + 1, (rid * 13) % n_files + 1}) if rid % (2 * every) else []
    lfiles = [(rid * 3) % n_links + 1] if rid % 3 != 1 else []
    return files or [(rid % n_files) + 1], lfiles


def photo_name(cid: int) -> str | None:
    """The cphoto of contact `cid`: a file name, or None (no photo)."""
    return f"c{cid}.png" if cid % _PHOTO_EVERY == 1 else None


def attach(resource: str, rec: Record, contacts: int) -> None:
    """Set a seeded record's `files`, `lfiles` (and a contact's `cphoto`) in place."""
    if resource in _EVERY and isinstance(rec.get("id"), int):
        rec["files"], rec["lfiles"] = links(resource, rec["id"], contacts)
    if resource == "contact" and isinstance(rec.get("id"), int):
        rec["cphoto"] = photo_name(rec["id"])


BOMB_INFLATED = 256 << 20


@functools.cache
def gzip_bomb() -> bytes:
    """A gzip body of about 256 KiB that inflates to `BOMB_INFLATED` zero bytes, compressed a MiB
    at a time (the emulator never holds what it inflates to)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    parts = [packer.compress(zeros) for _ in range(BOMB_INFLATED // len(zeros))]
    return b"".join(parts) + packer.flush()


def png(cid: int) -> bytes:
    """A real 8x8 PNG image, one colour derived from the contact id (zlib and struct only)."""
    r, g, b = (cid * 67) % 256, (cid * 131) % 256, (cid * 199) % 256
    width = height = 8
    raw = b"".join(b"\x00" + bytes((r, g, b)) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
