"""Signed model documents: Ed25519 over the document's canonical JSON.  Pure Python (``cryptography``).

Why Ed25519 and not an HMAC secret: with a key *pair*, only the merger holds
the private key; replicas, the serving job, ``LiveModel`` and ``riverflink
models`` verify with the public key, so none of them (nor anyone who steals
their configuration) can forge a model.  With an HMAC secret every verifier
could also sign.

A signed document carries ``"signature": {"alg": "ed25519", "key_id": K,
"value": B}`` at its top level, where ``B`` is the base64 signature of
:func:`canonical` (the document without ``signature``, keys sorted, compact)
and ``K`` the first 16 hex digits of the public key's SHA-256.

>>> signer = Signer.generate()
>>> doc = sign({"schema": "riverflink.model/1", "meta": {"version": 3}}, signer)
>>> verify(doc, signer.verifier()) is None
True
>>> doc["meta"]["version"] = 4
>>> verify(doc, signer.verifier())
'signature does not match the document'
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ALG = "ed25519"


@functools.lru_cache(maxsize=8)
def _private_key(private_raw: bytes) -> Any:
    """The key object of a raw private key (kept: building it derives the public key, about 40 us; the user
    records of a recommender are signed one by one)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(private_raw)


@functools.lru_cache(maxsize=8)
def _public_raw(private_raw: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return _private_key(private_raw).public_key().public_bytes(serialization.Encoding.Raw,
                                                               serialization.PublicFormat.Raw)


@functools.lru_cache(maxsize=8)
def _public_key(public_raw: bytes) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(public_raw)


def canonical(doc: dict) -> bytes:
    """The bytes that are signed: the document without ``signature``, keys sorted, compact JSON."""
    return orjson.dumps({k: v for k, v in doc.items() if k != "signature"},
                        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def _key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


@dataclass(frozen=True)
class Verifier:
    public_raw: bytes

    @property
    def key_id(self) -> str:
        return _key_id(self.public_raw)

    @classmethod
    def load(cls, path: str | Path) -> "Verifier":
        """From a PEM file holding an Ed25519 public key.  A private key is refused: whoever holds it can sign, so
        it belongs on the merger alone (``verify.pem`` is its public half)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        data = Path(path).read_bytes()
        if b"PRIVATE KEY" in data:
            raise ValueError(f"{path} holds a private (signing) key; a verifier takes the public key (verify.pem), "
                             "so that no serving node can sign")
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{path} does not hold an Ed25519 public key")
        return cls(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    def check(self, message: bytes, signature: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            _public_key(self.public_raw).verify(signature, message)
            return True
        except InvalidSignature:
            return False


@dataclass(frozen=True)
class Signer:
    #: never shown: ``repr`` names the key by its public id
    private_raw: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Signer(key_id={self.verifier().key_id!r})"

    @classmethod
    def generate(cls) -> "Signer":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        return cls(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption()))

    @classmethod
    def load(cls, path: str | Path) -> "Signer":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return cls(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption()))

    def _key(self) -> Any:
        return _private_key(self.private_raw)

    def verifier(self) -> Verifier:
        return Verifier(_public_raw(self.private_raw))

    def matches(self, public_raw: bytes) -> bool:
        """Whether ``public_raw`` (a raw Ed25519 public key) is this key's public half.

        >>> key = Signer.generate()
        >>> key.matches(key.verifier().public_raw), key.matches(Signer.generate().verifier().public_raw)
        (True, False)
        """
        return self.verifier().public_raw == public_raw

    def sign(self, message: bytes) -> bytes:
        return self._key().sign(message)

    def write(self, directory: str | Path, force: bool = False) -> tuple[Path, Path]:
        """``signing.pem`` (private, created with mode 600: never readable by others, not even for a moment) and
        ``verify.pem`` (public) under ``directory``.  Existing files are kept (``FileExistsError``) unless
        ``force``."""
        import os

        from cryptography.hazmat.primitives import serialization

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        private, public = d / "signing.pem", d / "verify.pem"
        existing = [str(p) for p in (private, public) if p.exists()]
        if existing and not force:
            raise FileExistsError(f"{', '.join(existing)} exist(s); a new key would lock out every reader of the "
                                  "old one: pass --force to replace them")
        key = self._key()
        for path, data, mode in (
            (private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()), 0o600),
            (public, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo), 0o644),
        ):
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)  # the mode from the first byte on
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        return private, public


def sign(doc: dict, signer: Signer) -> dict:
    """``doc`` with its ``signature`` (in place; also returned)."""
    doc["signature"] = {"alg": ALG, "key_id": signer.verifier().key_id,
                        "value": base64.b64encode(signer.sign(canonical(doc))).decode()}
    return doc


def verify(doc: dict, verifier: Verifier) -> str | None:
    """``None`` when ``doc`` carries a valid signature by ``verifier``'s key; else the reason it does not."""
    sig = doc.get("signature")
    if not isinstance(sig, dict) or sig.get("alg") != ALG or not isinstance(sig.get("value"), str):
        return "document is not signed (a verify key is configured)"
    if sig.get("key_id") != verifier.key_id:
        return f"signed by another key ({str(sig.get('key_id'))[:20]!r}, expected {verifier.key_id!r})"
    try:
        raw = base64.b64decode(sig["value"], validate=True)
    except ValueError:
        return "signature is not base64"
    if not verifier.check(canonical(doc), raw):
        return "signature does not match the document"
    return None
