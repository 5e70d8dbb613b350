"""Ed25519 signatures: who said what, checked with a public key only.

An approver's public key is configured (``promotion.approver_keys``) in the format
``ssh-keygen -t ed25519`` writes to ``id_ed25519.pub``, or as the base64 of the raw
32 bytes; the private key stays with its holder (a file named by an environment
variable, OpenSSH or PKCS#8 PEM). Signatures travel as URL-safe base64 text, so they
can be pasted into a form.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

APPROVER_KEY_ENV = "SLIPWAY_APPROVER_KEY"  # an approver's own private key, for 'slipway approve'


class KeyProblem(ValueError):
    """A key cannot be read; the message names where it came from."""


def public_key(text: str, where: str) -> Ed25519PublicKey:
    """``ssh-ed25519 AAAA… [comment]`` or base64 of the raw 32 bytes; ``where`` names it in errors."""
    text = text.strip()
    try:
        if text.startswith("ssh-"):
            key = serialization.load_ssh_public_key(text.encode())
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise KeyProblem(f"{where}: not an Ed25519 public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyProblem(f"{where}: an {type(key).__name__.removeprefix('_')}, not an Ed25519 key (ssh-keygen -t ed25519)")
    return key


def public_text(key: Ed25519PublicKey) -> str:
    """The OpenSSH one-line form (what ``promotion.approver_keys`` holds)."""
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def private_key(source: str, where: str) -> Ed25519PrivateKey:
    """A private key from PEM text or from the file it names (OpenSSH or PKCS#8, unencrypted)."""
    data = source.encode() if "-----BEGIN" in source else _read(Path(source).expanduser(), where)
    key: object
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyProblem(f"{where}: cannot read the private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyProblem(f"{where}: not an Ed25519 private key (ssh-keygen -t ed25519)")
    return key


def private_key_from_env(variable: str) -> Ed25519PrivateKey:
    value = os.environ.get(variable, "")
    if not value:
        raise KeyProblem(f"{variable} is not set: it must hold your Ed25519 private key or the path of its file")
    return private_key(value, variable)


def _read(path: Path, where: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyProblem(f"{where}: {path}: {exc.strerror or exc}") from None


def new_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    return base64.urlsafe_b64encode(key.sign(message)).decode().rstrip("=")


def verify(key: Ed25519PublicKey, message: bytes, signature: str) -> bool:
    """Whether ``signature`` (as :func:`sign` writes it) is the key's signature of exactly ``message``."""
    text = signature.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        key.verify(raw, message)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
