"""An export as one streamed tar: the data file, its manifest and the image files it refers to.

The path-based formats (`trl-*`, `jsonl`, `parquet`, `csv`) point at `images/<sha256>.<ext>`
beside the data file; the bundle keeps that layout, so unpacked it loads as it was written.
Written block by block (PAX headers from `tarfile`, contents in 1 MiB reads): memory does not
grow with the export's size."""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

BLOCK = tarfile.BLOCKSIZE  # 512
READ = 1 << 20


def bundle_members(directory: Path, data: Path, manifest: Path) -> list[tuple[str, Path]]:
    """(name in the tar, file) for the data file, the manifest and every image beside them."""
    members = [(data.name, data), (manifest.name, manifest)]
    images = directory / "images"
    if images.is_dir():
        members += [(f"images/{path.name}", path) for path in sorted(images.iterdir()) if path.is_file()]
    return members


def tar_stream(members: Iterable[tuple[str, Path]]) -> Iterator[bytes]:
    """A POSIX (PAX) tar of `members`, yielded in pieces of at most 1 MiB."""
    for name, path in members:
        stat = path.stat()
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = stat.st_size, int(stat.st_mtime), 0o644
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        written = 0
        with open(path, "rb") as handle:
            while block := handle.read(READ):
                written += len(block)
                yield block
        if written != info.size:  # the header promised a size: a file that changed makes a broken tar
            raise OSError(f"{name} changed while it was being bundled")
        if remainder := info.size % BLOCK:
            yield b"\0" * (BLOCK - remainder)
    yield b"\0" * (2 * BLOCK)  # end of archive
