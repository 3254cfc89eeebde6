"""A compressed body decoded a bounded piece at a time (`inflate`), for the photos' size limit.

httpx decodes `Content-Encoding: gzip` one network chunk at a time, all of it: 64 KiB of a
decompression bomb become 64 MiB before a size check can run. Here zlib's `max_length` caps each
piece, so a caller that counts the pieces against its limit holds at most one `PIECE` more.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

PIECE = 1 << 16  # decoded bytes at most per piece
# gzip, or deflate in its zlib wrapping (zlib tells the two apart by their header).
_ZLIB_ENCODINGS = frozenset({"gzip", "x-gzip", "deflate"})
ENCODINGS = _ZLIB_ENCODINGS | {"", "identity"}


class UnknownEncoding(ValueError):
    """A Content-Encoding not asked for (the client asks for gzip and deflate only)."""


def inflate(chunks: Iterable[bytes], content_encoding: str) -> Iterator[bytes]:
    """The decoded body of `chunks` (as sent), in pieces of at most PIECE bytes.
    Raises UnknownEncoding, or zlib.error for a body that is not what its encoding says."""
    encoding = content_encoding.strip().lower()
    if encoding not in ENCODINGS:
        raise UnknownEncoding(encoding)
    if encoding not in _ZLIB_ENCODINGS:
        yield from chunks
        return
    decoder = zlib.decompressobj(32 + zlib.MAX_WBITS)
    for chunk in chunks:
        pending = chunk
        while True:
            piece = decoder.decompress(pending, PIECE)
            pending = decoder.unconsumed_tail
            if piece:
                yield piece
            if not pending and len(piece) < PIECE:  # this chunk is used up and nothing waits
                break
    rest = decoder.flush()
    if rest:
        yield rest
