"""Public keys as notary lists them, their IDs, and signature checks.

A key is ``{"keytype": ..., "keyval": {"public": <base64>}}``. Its ID is the
SHA-256 of the key's canonical JSON. Key types and the signature methods each
admits follow notary: ecdsa signatures are raw ``r || s`` over SHA-256, RSA is
PSS (salt as long as the hash) or PKCS#1 v1.5, ed25519 is plain EdDSA.
"""

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from proxy.trust.canonical import encode_canonical

PublicKeyObject = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey

METHODS_BY_KEYTYPE: dict[str, frozenset[str]] = {
    "ed25519": frozenset({"eddsa"}),
    "ecdsa": frozenset({"ecdsa"}),
    "ecdsa-x509": frozenset({"ecdsa"}),
    "rsa": frozenset({"rsapss", "rsapkcs1v15"}),
    "rsa-x509": frozenset({"rsapss", "rsapkcs1v15"}),
}


class UnusableKey(ValueError):
    """A key or signature that cannot be used; the message says why."""


@dataclass(frozen=True)
class PublicKey:
    """One parsed public key, with the certificate when it came as one."""

    keyid: str
    keytype: str
    key: PublicKeyObject
    certificate: x509.Certificate | None

    def verify(self, method: str, signature: bytes, message: bytes) -> bool:
        """True when ``signature`` by ``method`` over ``message`` is valid for this key."""
        if method not in METHODS_BY_KEYTYPE[self.keytype]:
            raise UnusableKey(f"method {method!r} is not allowed for a {self.keytype} key")
        try:
            if isinstance(self.key, ed25519.Ed25519PublicKey):
                self.key.verify(signature, message)
            elif isinstance(self.key, ec.EllipticCurvePublicKey):
                self.key.verify(_der_from_raw(signature, self.key), message, ec.ECDSA(hashes.SHA256()))
            elif method == "rsapss":
                pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
                self.key.verify(signature, message, pss, hashes.SHA256())
            else:
                self.key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return False
        return True


def _der_from_raw(signature: bytes, key: ec.EllipticCurvePublicKey) -> bytes:
    """Turn notary's fixed-width ``r || s`` into the DER form cryptography takes."""
    width = (key.curve.key_size + 7) // 8
    if len(signature) != 2 * width:
        raise InvalidSignature()
    return utils.encode_dss_signature(
        int.from_bytes(signature[:width], "big"), int.from_bytes(signature[width:], "big")
    )


def key_id(key: dict[str, Any]) -> str:
    """The TUF key ID: SHA-256 of the canonical JSON of the key object."""
    return hashlib.sha256(encode_canonical(key)).hexdigest()


def parse_key(keyid: str, key: Any) -> PublicKey:
    """Parse one entry of a ``keys`` map, refusing a key whose ID does not match it."""
    if not isinstance(key, dict) or not isinstance(key.get("keyval"), dict):
        raise UnusableKey(f"key {keyid} is not a key object")
    keytype = key.get("keytype")
    if keytype not in METHODS_BY_KEYTYPE:
        raise UnusableKey(f"key {keyid} has unsupported type {keytype!r}")
    if key_id(key) != keyid:
        raise UnusableKey(f"key ID {keyid} does not match its key")
    public: object
    try:
        material = base64.b64decode(key["keyval"].get("public") or "", validate=True)
        certificate = None
        if keytype.endswith("-x509"):
            certificate = x509.load_pem_x509_certificate(material)
            public = certificate.public_key()
        elif keytype == "ed25519":
            public = ed25519.Ed25519PublicKey.from_public_bytes(material)
        else:
            public = serialization.load_der_public_key(material)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise UnusableKey(f"key {keyid} ({keytype}) cannot be read: {exc}") from None
    expected = ec.EllipticCurvePublicKey if keytype.startswith("ecdsa") else (
        rsa.RSAPublicKey if keytype.startswith("rsa") else ed25519.Ed25519PublicKey
    )
    if not isinstance(public, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)) \
            or not isinstance(public, expected):
        raise UnusableKey(f"key {keyid} is labelled {keytype} but holds another kind of key")
    return PublicKey(keyid=keyid, keytype=keytype, key=public, certificate=certificate)
