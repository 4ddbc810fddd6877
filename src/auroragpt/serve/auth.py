"""API keys for the endpoint: stored as SHA-256 hex digests, checked in constant time.

A keys file holds one key hash per line (64 hex characters, as printed by
`auroragpt serve --hash-key KEY`, i.e. `sha256(KEY.encode()).hexdigest()`); blank lines and lines
starting with '#' are ignored. AURORAGPT_API_KEYS holds plain keys separated by commas, for quick
tests; they are hashed on load so both sources are compared the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from pathlib import Path

from auroragpt import envvars
from auroragpt.errors import ConfigError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def hash_key(key: str) -> str:
    """The line to put in a keys file for `key`."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def read_keys_file(path: str | os.PathLike) -> list[str]:
    """Key hashes from a keys file; a malformed line is an error naming the line."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise ConfigError(f"cannot read API keys file {path}: {err.strerror or err}") from None
    hashes = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not _HEX64.match(line.lower()):
            raise ConfigError(
                f"{path}:{number}: not a SHA-256 hex digest (64 hex characters)",
                hint="store hashes, not keys: write the output of `auroragpt serve --hash-key KEY`",
            )
        hashes.append(line.lower())
    if not hashes:
        raise ConfigError(f"API keys file {path} holds no keys", hint="add lines made by `auroragpt serve --hash-key KEY`")
    return hashes


class KeyChecker:
    """Holds the accepted key hashes; `identify(token)` returns the key's hash or None."""

    def __init__(self, hashes: list[str]) -> None:
        self._hashes = [bytes.fromhex(h) for h in hashes]

    @property
    def enabled(self) -> bool:
        return bool(self._hashes)

    @classmethod
    def from_sources(cls, keys_file: str | os.PathLike | None = None) -> "KeyChecker":
        """Keys from the file and from AURORAGPT_API_KEYS (both may be given)."""
        hashes = read_keys_file(keys_file) if keys_file else []
        plain = envvars.read("AURORAGPT_API_KEYS")
        if plain:
            hashes += [hash_key(k.strip()) for k in plain.split(",") if k.strip()]
        return cls(hashes)

    def identify(self, token: str) -> str | None:
        """The hash of `token` when it is an accepted key. Every stored hash is compared, in
        constant time, so timing reveals neither which key matched nor how much of it."""
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        match = False
        for stored in self._hashes:
            match |= hmac.compare_digest(digest, stored)
        return digest.hex() if match else None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
