"""End-to-end encryption middleware, compatible with Inngest's (`inngest-encryption`)."""

from __future__ import annotations

from ._encryption import EncryptionError, EncryptionMiddleware, Encryptor, is_encrypted

__all__ = ["EncryptionError", "EncryptionMiddleware", "Encryptor", "is_encrypted"]
