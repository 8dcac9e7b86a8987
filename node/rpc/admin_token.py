"""The admin listener's bearer token: a file of mode 0600, created with a random token on first
start, and refused when group or others can read it (as ssh refuses a readable key). Imports
the stdlib and node.log.
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
import secrets
import stat
from typing import Final

from node.log import log_event

logger = logging.getLogger("perpchain.rpc")

_TOKEN_TEXT: Final = re.compile(rb"[0-9A-Za-z_\-.~+/=]{32,512}")


class AdminTokenError(ValueError):
    """The admin token file is unreadable, malformed or readable by others."""


def load_admin_token(path: pathlib.Path) -> bytes:
    """The token (stripped of whitespace); refuses a file group/other can read, like ssh."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes().strip()
    except OSError as error:
        raise AdminTokenError(f"admin token {path}: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AdminTokenError(
            f"admin token {path} has mode {stat.S_IMODE(mode):o}; run chmod 600 {path}"
        )
    if not _TOKEN_TEXT.fullmatch(data):
        raise AdminTokenError(f"admin token {path}: must be 32-512 printable token characters")
    return data


def ensure_admin_token(path: pathlib.Path) -> bytes:
    """Load the token, creating a random one (mode 0600) if the file does not exist."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(32).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_admin_token(path)  # created concurrently
        with os.fdopen(fd, "wb") as file:
            file.write(token + b"\n")
        log_event(logger, "rpc.admin_token_created", path=str(path))
    return load_admin_token(path)
