"""Operators: what replaces each entity found (replace, mask, hash, redact, encrypt), per entity type.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from tasks.data.pii.settings import PiiSettings


def _secret_from_env(env: str) -> str | None:
    """The value of ``$env`` (a key or a salt): callers name the variable in messages, never the value."""
    return os.environ.get(env) or None


def _operator_fn(name: str, entity: str, settings: PiiSettings) -> Callable[[str], str]:
    """A function from the original value to its replacement. Keys and salts stay inside closures."""
    if name == "replace":
        token = f"<{entity}>"
        return lambda value: token
    if name == "redact":
        return lambda value: ""
    if name == "mask":
        return lambda value: "*" * len(value)  # Presidio's mask with chars_to_mask >= len(value)
    if name == "hash":
        from presidio_anonymizer.operators import Hash

        params: dict[str, Any] = {"hash_type": "sha256"}
        salt = _secret_from_env(settings.hash_salt_env)
        if salt is not None:
            if len(salt.encode()) < 16:
                raise ValueError(f"pii operator 'hash': the salt in ${settings.hash_salt_env} must be at least 16 "
                                 "bytes long")
            params["salt"] = salt
        hasher = Hash()
        return lambda value: hasher.operate(text=value, params=dict(params))
    if name == "encrypt":
        from presidio_anonymizer.operators import Encrypt
        from presidio_anonymizer.operators.aes_cipher import AESCipher

        key = _secret_from_env(settings.encrypt_key_env)
        if not key:
            raise ValueError(f"pii operator 'encrypt' needs a key in ${settings.encrypt_key_env}")
        if not AESCipher.is_valid_key_size(key.encode("utf8")):
            raise ValueError(f"pii operator 'encrypt': the key in ${settings.encrypt_key_env} must be 16, 24 or 32 "
                             "bytes long")
        encrypter = Encrypt()

        def encrypt(value: str) -> str:
            try:
                return encrypter.operate(text=value, params={"key": key})
            except Exception as e:  # never let the key travel in an exception's text or its chain
                raise ValueError(f"pii operator 'encrypt' failed for {entity}: {type(e).__name__}") from None

        return encrypt
    raise ValueError(f"unknown pii operator {name!r}")


def secret_fingerprints(settings: PiiSettings) -> dict[str, str | None]:
    """For the snapshot cache key: a fingerprint of each key or salt the configured operators use (never the
    value), so that rotating ``$TUNEGATE_PII_KEY`` or the salt scrubs again instead of reusing the old snapshot."""
    import hashlib

    used = {settings.operator, *settings.operators.values()}
    out: dict[str, str | None] = {}
    for operator, env in (("encrypt", settings.encrypt_key_env), ("hash", settings.hash_salt_env)):
        if operator in used:
            value = _secret_from_env(env)
            out[operator] = hashlib.sha256(f"tunegate-pii-{operator}:{value}".encode()).hexdigest()[:16] if value else None
    return out


class Operators:
    """The replacement function for each entity type, built once per batch."""

    def __init__(self, settings: PiiSettings):
        self.names = {e: settings.operators.get(e, settings.operator) for e in settings.entities}
        self.fns = {e: _operator_fn(op, e, settings) for e, op in self.names.items()}
        self.default = _operator_fn(settings.operator, "PII", settings)
        self.default_name = settings.operator

    def __call__(self, entity: str, value: str) -> str:
        return self.fns.get(entity, self.default)(value)


def operators_for(settings: PiiSettings) -> dict[str, Any]:
    """Presidio ``OperatorConfig`` per entity type, for AnonymizerEngine (reference and comparison code)."""
    from presidio_anonymizer.entities import OperatorConfig

    def config(name: str, entity: str):
        if name == "replace":
            return OperatorConfig("replace", {"new_value": f"<{entity}>"})
        if name == "mask":
            return OperatorConfig("mask", {"masking_char": "*", "chars_to_mask": 10_000, "from_end": False})
        if name == "hash":
            salt = _secret_from_env(settings.hash_salt_env)
            return OperatorConfig("hash", {"hash_type": "sha256", **({"salt": salt} if salt else {})})
        if name == "encrypt":
            key = _secret_from_env(settings.encrypt_key_env)
            if not key:
                raise ValueError(f"pii operator 'encrypt' needs a key in ${settings.encrypt_key_env}")
            return OperatorConfig("encrypt", {"key": key})
        return OperatorConfig("redact", {})

    ops = {e: config(settings.operators.get(e, settings.operator), e) for e in settings.entities}
    ops["DEFAULT"] = config(settings.operator, "PII")
    return ops
