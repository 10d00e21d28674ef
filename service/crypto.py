"""Encryption of Meta access tokens at rest, and bearer-token generation and hashing."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .config import PREFIX, ConfigError, Secret, Settings
from .files import private_directory

logger = logging.getLogger(__name__)

KEY_FILE = "encryption.key"
HEX = frozenset("0123456789abcdef")
TOKEN_PREFIX = "tsk_"  # noqa: S105 (a prefix, not a secret)


class DecryptionError(Exception):
    """A stored Meta token was encrypted under a key that is no longer configured."""


class NoMetaToken(DecryptionError):
    """The channel routes webhooks only (`channel add --webhooks-only`): no Meta token."""


def meta_token(cipher: TokenCipher, access_token_enc: str | None, waba_id: str) -> str:
    """A channel's Meta token in clear: DecryptionError when no configured key reads it,
    NoMetaToken when the channel has none."""
    if access_token_enc is None:
        raise NoMetaToken(f"WABA {waba_id} routes webhooks only: it has no Meta token")
    return cipher.decrypt(access_token_enc)


class TokenCipher:
    """Encrypts with the first key; decrypts with any (rotation)."""

    def __init__(self, keys: tuple[Secret, ...]) -> None:
        if not keys:
            raise ConfigError(f"{PREFIX}ENCRYPTION_KEYS is empty")
        try:
            self._fernet = MultiFernet([Fernet(key.value.encode()) for key in keys])
        except ValueError:
            raise ConfigError(
                f"{PREFIX}ENCRYPTION_KEYS must be Fernet keys (32 url-safe base64 bytes); "
                "create one with: template-sync keys generate"
            ) from None

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def rotate(self, ciphertext: str) -> str:
        """The same plaintext encrypted under the first key."""
        try:
            return self._fernet.rotate(ciphertext.encode()).decode()
        except InvalidToken:
            raise DecryptionError("stored token was encrypted under an unknown key") from None

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise DecryptionError("stored token was encrypted under an unknown key") from None


def generate_key() -> str:
    return Fernet.generate_key().decode()


def load_cipher(settings: Settings) -> TokenCipher:
    """The configured keys, or a key generated once into the data directory (with a warning)."""
    if settings.encryption_keys:
        return TokenCipher(settings.encryption_keys)
    path = settings.data_dir / KEY_FILE
    if not path.exists():
        _write_key_file(path)
        logger.warning(
            "generated an encryption key in %s; set %sENCRYPTION_KEYS in production "
            "and keep a copy: without it stored Meta tokens cannot be read",
            path,
            PREFIX,
        )
    return TokenCipher((Secret(path.read_text().strip()),))


def _write_key_file(path: Path) -> None:
    private_directory(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(generate_key() + "\n")


@dataclass(frozen=True)
class NewToken:
    token_id: str
    token: str = field(repr=False)  # shown once, never stored
    token_hash: str


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_bearer_token() -> NewToken:
    """A token `tsk_<id>.<secret>`: the id finds the row, the hash of the whole is compared."""
    token_id = secrets.token_hex(8)
    token = f"{TOKEN_PREFIX}{token_id}.{secrets.token_urlsafe(32)}"
    return NewToken(token_id, token, hash_secret(token))


def token_id_of(token: str) -> str | None:
    """The id part of a bearer token, or None when the token is not of our shape."""
    if not token.startswith(TOKEN_PREFIX) or "." not in token:
        return None
    token_id = token[len(TOKEN_PREFIX) :].split(".", 1)[0]
    is_hex = bool(token_id) and len(token_id) <= 32 and all(c in HEX for c in token_id)
    return token_id if is_hex else None


def token_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(token), stored_hash)
