"""Where stages write: an output directory the user names is checked before any work, and a disk that fills up
while a stage writes is reported as one line naming the place, not as the traceback of whichever library was writing.
"""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import UserError

# Below this, a failed write is taken to be the full disk's doing (torch.save reports it only as a failed write).
NEARLY_FULL = 1 << 20


def check_output_dir(path: str | Path, what: str) -> None:
    """`path` is a directory, or one that can be created: not a file, not below a file, not read-only."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a directory; name a directory")
    existing = next(p for p in [path, *path.parents] if p.exists())
    if not existing.is_dir():
        raise UserError(f"{what} {path} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path} cannot be {'written' if existing == path else 'created'}: "
                        f"{existing} is not writable")


@contextmanager
def disk_space_errors(path: str | Path) -> Iterator[None]:
    """A write under `path` that fails because the disk (or quota) is full becomes one UserError naming `path`.

    Libraries report it each their own way: an OSError with ENOSPC (Python's own writes), a SafetensorError whose
    text ends in "No space left on device (os error 28)", a RuntimeError from torch.save that names no cause at
    all. So besides the error itself, the free space on `path`'s device decides.
    """
    try:
        yield
    except Exception as e:  # noqa: BLE001 - re-raised unless it is the full disk
        if not _out_of_space(e, Path(path)):
            raise
        raise UserError(f"no space left on the device of {path} while writing there; free some space (or write "
                        "elsewhere) and run again") from None


def _out_of_space(e: Exception, path: Path) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if "No space left on device" in str(e) or "Disk quota exceeded" in str(e):
        return True
    if not isinstance(e, OSError | RuntimeError):
        return False
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    return existing is not None and shutil.disk_usage(existing).free < NEARLY_FULL
