"""Owner-only files for what the survey writes: the probe's report and a capture.

Owns: `private_dir` (a directory made 0700) and `open_private` (a file created 0600). Both hold
an account's structure (record ids, counts, dates, amounts): the mode is set explicitly, so that
a umask of 022 (the usual one) does not leave them readable by every user of the machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(directory: Path) -> None:
    """Create `directory` (and its parents) if need be; one this call creates is made 0700.
    An existing directory keeps its mode: it is the user's (`--capture .` must not chmod `.`)."""
    if directory.is_dir():
        return
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(DIR_MODE)  # mkdir's mode is masked by the umask


def open_private(path: Path) -> IO[bytes]:
    """`path` opened for writing (truncated), 0600 whatever the umask and whatever it was before."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # O_CREAT's mode is masked by the umask, and ignored for a file that existed
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "wb")
