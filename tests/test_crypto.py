"""Meta tokens encrypted at rest (with key rotation) and API bearer tokens."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from service.config import ConfigError, Secret, Settings
from service.crypto import (
    KEY_FILE,
    DecryptionError,
    TokenCipher,
    generate_key,
    hash_secret,
    load_cipher,
    new_bearer_token,
    token_id_of,
    token_matches,
)

META_TOKEN = "EAAG-meta-access-token-123"
TOKEN_SHAPE = re.compile(r"tsk_([0-9a-f]{16})\.[A-Za-z0-9_-]{43}")


def cipher(*keys: str) -> TokenCipher:
    return TokenCipher(tuple(Secret(key) for key in keys))


def test_round_trip() -> None:
    tokens = cipher(generate_key())
    encrypted = tokens.encrypt(META_TOKEN)
    assert META_TOKEN not in encrypted
    assert tokens.decrypt(encrypted) == META_TOKEN
    assert tokens.encrypt(META_TOKEN) != encrypted  # a fresh IV every time
    assert tokens.decrypt(tokens.encrypt("ünïcødé ✓")) == "ünïcødé ✓"


def test_rotation() -> None:
    key_a, key_b = generate_key(), generate_key()
    old = cipher(key_a).encrypt(META_TOKEN)

    rotated = cipher(key_b, key_a)
    assert rotated.decrypt(old) == META_TOKEN
    new = rotated.encrypt("new value")
    assert cipher(key_b).decrypt(new) == "new value"
    with pytest.raises(DecryptionError):
        cipher(key_a).decrypt(new)

    with pytest.raises(DecryptionError):
        cipher(key_b).decrypt(old)


@pytest.mark.parametrize("ciphertext", ["", "not a fernet token", "gAAAAAB" + "A" * 80, "é"])
def test_garbage_ciphertext_raises_decryption_error(ciphertext: str) -> None:
    with pytest.raises(DecryptionError):
        cipher(generate_key()).decrypt(ciphertext)


@pytest.mark.parametrize(
    "bad_key",
    [
        "",
        "too-short",
        "x" * 44,  # right length, not base64 of 32 bytes
        "é" * 44,
        base64.urlsafe_b64encode(bytes(16)).decode(),  # valid base64, 16 bytes
        base64.urlsafe_b64encode(bytes(32)).decode()[:-2],  # padding cut off
    ],
    ids=["empty", "short", "not-base64", "non-ascii", "16-bytes", "no-padding"],
)
def test_invalid_key_raises_config_error(bad_key: str) -> None:
    with pytest.raises(ConfigError, match="TEMPLATE_SYNC_ENCRYPTION_KEYS") as caught:
        cipher(generate_key(), bad_key)
    if bad_key:
        assert bad_key not in str(caught.value)
    assert caught.value.__suppress_context__  # no chained traceback showing the key


def test_no_keys_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="TEMPLATE_SYNC_ENCRYPTION_KEYS"):
        TokenCipher(())


def test_load_cipher_generates_a_key_file_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="service.crypto")
    settings = Settings(data_dir=tmp_path / "data" / "nested")
    path = settings.data_dir / KEY_FILE

    first = load_cipher(settings)
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text().strip()
    Fernet(key.encode())  # a valid key
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "TEMPLATE_SYNC_ENCRYPTION_KEYS" in warnings[0].getMessage()
    assert key not in caplog.text
    encrypted = first.encrypt(META_TOKEN)

    caplog.clear()
    second = load_cipher(settings)
    assert path.read_text().strip() == key
    assert second.decrypt(encrypted) == META_TOKEN
    assert cipher(key).decrypt(encrypted) == META_TOKEN
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_configured_keys_win_over_the_key_file(tmp_path: Path) -> None:
    file_key, configured_key = generate_key(), generate_key()
    (tmp_path / KEY_FILE).write_text(file_key + "\n")
    settings = Settings(data_dir=tmp_path, encryption_keys=(Secret(configured_key),))

    encrypted = load_cipher(settings).encrypt(META_TOKEN)
    assert cipher(configured_key).decrypt(encrypted) == META_TOKEN
    with pytest.raises(DecryptionError):
        cipher(file_key).decrypt(encrypted)


def test_configured_keys_create_no_key_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", encryption_keys=(Secret(generate_key()),))
    load_cipher(settings)
    assert not (tmp_path / "data").exists()


def test_new_bearer_token_shape() -> None:
    new = new_bearer_token()
    match = TOKEN_SHAPE.fullmatch(new.token)
    assert match is not None, new.token
    assert match.group(1) == new.token_id
    assert new.token_hash == hashlib.sha256(new.token.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", new.token_hash)
    other = new_bearer_token()
    assert (other.token_id, other.token) != (new.token_id, new.token)


def test_new_token_repr_hides_the_token() -> None:
    new = new_bearer_token()
    assert new.token not in repr(new)


def test_token_id_of_our_tokens() -> None:
    new = new_bearer_token()
    assert token_id_of(new.token) == new.token_id
    assert token_id_of("tsk_" + "a" * 32 + ".secret") == "a" * 32
    assert token_id_of("tsk_abc.secret.with.dots") == "abc"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "tsk_",
        "tsk_abc",  # no secret part
        "tsk_.secret",  # empty id
        "tsk_ab-c.secret",
        "tsk_ab c.secret",
        "tsk_" + "a" * 33 + ".secret",
        "TSK_abc.secret",
        "Bearer tsk_abc.secret",
        "abc.secret",
    ],
)
def test_token_id_of_malformed_tokens(token: str) -> None:
    assert token_id_of(token) is None


@hypothesis_settings(database=None, max_examples=300)
@given(st.text())
def test_token_id_of_never_raises(token: str) -> None:
    token_id = token_id_of(token)
    if token_id is not None:
        assert token.startswith(f"tsk_{token_id}.")
        assert 1 <= len(token_id) <= 32 and token_id.isalnum()


@hypothesis_settings(database=None, max_examples=100)
@given(st.text().map(lambda suffix: "tsk_" + suffix))
def test_token_id_of_never_raises_on_prefixed_text(token: str) -> None:
    token_id = token_id_of(token)
    assert token_id is None or token.startswith(f"tsk_{token_id}.")


def test_token_matches() -> None:
    new = new_bearer_token()
    assert token_matches(new.token, new.token_hash)
    assert not token_matches(new.token + "x", new.token_hash)
    assert not token_matches(new.token[:-1], new.token_hash)
    assert not token_matches(new_bearer_token().token, new.token_hash)
    assert not token_matches(new.token, new.token_hash.upper())
    assert hash_secret(new.token) == new.token_hash


@hypothesis_settings(database=None, max_examples=100)
@given(st.text())
def test_token_matches_never_raises_on_arbitrary_text(token: str) -> None:
    stored = hash_secret("tsk_0123456789abcdef.secret")
    assert token_matches(token, stored) is (token == "tsk_0123456789abcdef.secret")
