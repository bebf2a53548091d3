"""Where a streamed export goes: a path (written beside it, then renamed into place, so a
failed download never leaves a truncated file under the real name) or an open binary file."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Union

#: A path, or a binary file open for writing.
Destination = Union[str, "os.PathLike[str]", IO[bytes]]


@contextlib.contextmanager
def sink(to: Destination) -> Iterator[IO[bytes]]:
    """A binary file to write the export into; a path is only in place once all went well."""
    if not isinstance(to, str | os.PathLike):
        yield to
        return
    final = Path(to)
    partial = final.with_name(final.name + ".part")
    try:
        with partial.open("wb") as file:
            yield file
        partial.replace(final)
    finally:
        partial.unlink(missing_ok=True)
