"""Build Notary-v1-shaped TUF repositories with keys made in the test, to tamper and re-sign.

Real notary output covers the formats; this covers the checks: a test changes
one field (a version, an expiry, a hash, a path) and signs again, so that the
check under test, and only it, is what fails.
"""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.x509.oid import NameOID

from proxy.trust.canonical import encode_canonical
from proxy.trust.keys import key_id

Private = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
NOW = datetime.datetime(2026, 12, 4, tzinfo=datetime.timezone.utc)
NOW_NS = int(NOW.timestamp()) * 1_000_000_000


def stamp(days: float) -> str:
    """An expiry ``days`` after NOW, in notary's nanosecond form."""
    moment = NOW + datetime.timedelta(days=days)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + ".123456789Z"


@dataclass
class Key:
    """A private key and its TUF public form."""

    keytype: str
    private: Private
    public: dict[str, Any]
    keyid: str
    method: str

    @classmethod
    def make(cls, keytype: str = "ed25519", cn: str = "test", method: str | None = None) -> "Key":
        private: Private
        if keytype == "ed25519":
            private = ed25519.Ed25519PrivateKey.generate()
            material = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        elif keytype.startswith("ecdsa"):
            private = ec.generate_private_key(ec.SECP256R1())
            material = _material(private, keytype, cn)
        else:
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            material = _material(private, keytype, cn)
        public = {"keytype": keytype, "keyval": {"private": None, "public": base64.b64encode(material).decode()}}
        method = method or {"ed25519": "eddsa", "ecdsa": "ecdsa", "ecdsa-x509": "ecdsa"}.get(keytype, "rsapss")
        return cls(keytype=keytype, private=private, public=public, keyid=key_id(public), method=method)

    def sign(self, message: bytes) -> bytes:
        if isinstance(self.private, ed25519.Ed25519PrivateKey):
            return self.private.sign(message)
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            r, s = utils.decode_dss_signature(self.private.sign(message, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        if self.method == "rsapkcs1v15":
            return self.private.sign(message, padding.PKCS1v15(), hashes.SHA256())
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
        return self.private.sign(message, pss, hashes.SHA256())


def _material(private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, keytype: str, cn: str) -> bytes:
    if not keytype.endswith("-x509"):
        return private.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=3650))
        .sign(private, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def envelope(signed: dict[str, Any], signers: list[Key]) -> bytes:
    """Sign ``signed`` canonically with each key, as notary lays the file out."""
    message = encode_canonical(signed)
    signatures = [
        {"keyid": k.keyid, "method": k.method, "sig": base64.b64encode(k.sign(message)).decode()} for k in signers
    ]
    return json.dumps({"signed": signed, "signatures": signatures}, separators=(",", ":")).encode()


def file_meta(data: bytes) -> dict[str, Any]:
    return {
        "hashes": {
            "sha256": base64.b64encode(hashlib.sha256(data).digest()).decode(),
            "sha512": base64.b64encode(hashlib.sha512(data).digest()).decode(),
        },
        "length": len(data),
    }


def target(digest_hex: str, length: int) -> dict[str, Any]:
    return {"hashes": {"sha256": base64.b64encode(bytes.fromhex(digest_hex)).decode()}, "length": length}


@dataclass
class Repo:
    """One GUN's roles, editable before ``files()`` signs them, parents after children."""

    gun: str = "127.0.0.1:5000/library/demo"
    keys: dict[str, Key] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    expires: dict[str, str] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    delegations: dict[str, dict[str, Any]] = field(default_factory=dict)
    thresholds: dict[str, int] = field(default_factory=dict)

    @classmethod
    def standard(cls) -> "Repo":
        """Like ``docker push`` + a ``targets/releases`` delegation signing v1."""
        repo = cls()
        repo.keys = {
            "root": Key.make("ecdsa-x509", cn=repo.gun),
            "targets": Key.make("ecdsa"),
            "snapshot": Key.make("ed25519"),
            "timestamp": Key.make("ed25519"),
            "targets/releases": Key.make("ecdsa-x509", cn="releases"),
        }
        repo.versions = {"root": 1, "targets": 2, "snapshot": 3, "timestamp": 4, "targets/releases": 1}
        repo.expires = {"root": stamp(3650), "targets": stamp(1095), "snapshot": stamp(1095),
                        "timestamp": stamp(14), "targets/releases": stamp(1095)}
        repo.targets = {"targets": {"base": target("ab" * 32, 500)},
                        "targets/releases": {"v1": target("cd" * 32, 345)}}
        repo.delegations = {"targets/releases": {"paths": [""], "threshold": 1}}
        return repo

    def root_signed(self) -> dict[str, Any]:
        roles = {name: {"keyids": [self.keys[name].keyid], "threshold": self.thresholds.get(name, 1)}
                 for name in ("root", "targets", "snapshot", "timestamp")}
        return {"_type": "Root", "consistent_snapshot": False, "expires": self.expires["root"],
                "keys": {self.keys[n].keyid: self.keys[n].public for n in roles}, "roles": roles,
                "version": self.versions["root"]}

    def targets_signed(self, role: str) -> dict[str, Any]:
        children = {name: d for name, d in self.delegations.items() if name.rpartition("/")[0] == role}
        return {
            "_type": "Targets",
            "delegations": {
                "keys": {self.keys[n].keyid: self.keys[n].public for n in children},
                "roles": [{"keyids": [self.keys[n].keyid], "name": n, "paths": d["paths"],
                           "threshold": d["threshold"]} for n, d in children.items()],
            },
            "expires": self.expires[role], "targets": self.targets.get(role, {}), "version": self.versions[role],
        }

    def files(self, signers: dict[str, list[Key]] | None = None, root: bytes | None = None) -> dict[str, bytes]:
        """Every role file, signed; ``signers`` replaces the keys that sign a role.

        Signatures are not deterministic: pass an earlier ``root`` to keep its exact bytes.
        """
        signers = signers or {}

        def sign(role: str, signed: dict[str, Any]) -> bytes:
            return envelope(signed, signers.get(role, [self.keys[role]]))

        files = {"root": root or sign("root", self.root_signed())}
        for role in [*self.delegations, "targets"]:
            files[role] = sign(role, self.targets_signed(role))
        snapshot = {"_type": "Snapshot", "expires": self.expires["snapshot"], "version": self.versions["snapshot"],
                    "meta": {name: file_meta(files[name]) for name in files}}
        files["snapshot"] = sign("snapshot", snapshot)
        timestamp = {"_type": "Timestamp", "expires": self.expires["timestamp"],
                     "version": self.versions["timestamp"], "meta": {"snapshot": file_meta(files["snapshot"])}}
        files["timestamp"] = sign("timestamp", timestamp)
        return files

    def copy(self) -> "Repo":
        return copy.deepcopy(self)
