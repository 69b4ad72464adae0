"""API-key auth for POST /predict: keys read once from a mounted Secret file and kept only as SHA-256 digests, a
presented key compared in constant time against all of them, one 401 answer whatever was wrong."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from kit.core.errors import KitError

__all__ = ["API_KEY_HEADER", "UNAUTHORIZED", "KeyStore", "read_keys", "api_key_dependency"]

API_KEY_HEADER = "X-API-Key"
# The same body for a missing, malformed or wrong key: a caller learns nothing about which part failed.
UNAUTHORIZED = "missing or invalid API key"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class KeyStore:
    """The accepted keys, as digests only (a memory dump shows no key)."""

    def __init__(self, keys: list[str]):
        if not keys:
            raise KitError("API key auth: no keys given")
        self._digests = [_digest(k) for k in keys]

    def __len__(self) -> int:
        return len(self._digests)

    def accepts(self, presented: str) -> bool:
        """Whether `presented` is one of the keys; compares against every digest, no early exit."""
        got = _digest(presented)
        ok = False
        for d in self._digests:
            ok |= hmac.compare_digest(got, d)
        return ok


def read_keys(path: str | Path) -> KeyStore:
    """Read one key per line (blank lines and surrounding whitespace ignored).

    Raises:
        KitError: the file cannot be read or holds no key (names the file, never its content).
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise KitError(f"serve.api_key_file: cannot read {path}: {exc.__class__.__name__}") from None
    keys = [line.strip() for line in lines if line.strip()]
    if not keys:
        raise KitError(f"serve.api_key_file: {path} holds no key (one key per line)")
    return KeyStore(keys)


def api_key_dependency(store: KeyStore) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency accepting `Authorization: Bearer KEY` or `X-API-Key: KEY`; anything else is a 401."""
    # auto_error=False: both schemes are optional on their own; the dependency decides, and answers one way.
    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="The API key")

    async def check(
        creds: HTTPAuthorizationCredentials | None = Depends(bearer), key: str | None = Depends(header)
    ) -> None:
        presented = [k for k in (creds.credentials if creds else None, key) if k]
        # Every presented key is checked (no short-circuit on the first): timing says nothing about which one.
        accepted = [store.accepts(k) for k in presented]
        if not accepted or not any(accepted):
            raise HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": 'Bearer realm="kit"'})

    return check
