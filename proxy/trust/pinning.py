"""Which roots may be trusted for a GUN: certificate rules, pins, and trust on first use.

Root keys that come as certificates must name the GUN (a trailing ``*`` in the
CN covers a prefix), be within their validity period, not be signed with
SHA-1, and not be RSA under 2048 bits; a root whose root role keeps fewer good
keys than its threshold is refused. On top of that a GUN (or GUN prefix) may
pin root key IDs, or a CA the root certificates must chain to, as notary's
``trust_pinning`` does; and trust on first use may be switched off, so that a
GUN with no pin is refused. Pure: the caller passes the time.
"""

import datetime
import hashlib
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from proxy.trust.errors import VerificationFailed
from proxy.trust.keys import PublicKey
from proxy.trust.metadata import Root

MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class Pinning:
    """``keys``: GUN → pinned key IDs; ``cas``: GUN or prefix → CA certificates."""

    keys: dict[str, frozenset[str]] = field(default_factory=dict)
    cas: dict[str, tuple[x509.Certificate, ...]] = field(default_factory=dict)
    tofu: bool = True

    def pinned_keys(self, gun: str) -> frozenset[str] | None:
        return self.keys.get(gun)

    def pinned_cas(self, gun: str) -> tuple[x509.Certificate, ...] | None:
        """The CA of the longest matching prefix (an exact GUN is its own longest prefix)."""
        matches = [prefix for prefix in self.cas if gun.startswith(prefix.rstrip("*"))]
        return self.cas[max(matches, key=len)] if matches else None


def canonical_key_id(key: PublicKey) -> str:
    """The ID notary's CLI shows for a root key: SHA-256 of the public key (PKIX DER)."""
    der = key.key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def check_root(root: Root, gun: str, pinning: Pinning, now: int) -> None:
    """Refuse a root this GUN may not have."""
    role = root.roles["root"]
    moment = datetime.datetime.fromtimestamp(now // 1_000_000_000, datetime.timezone.utc)
    problems: dict[str, str] = {}
    good: list[PublicKey] = []
    for keyid in sorted(role.keyids):
        key = root.keys.get(keyid)
        problem = "not listed" if key is None else _certificate_problem(key, gun, moment)
        if problem:
            problems[keyid] = problem
        else:
            assert key is not None
            good.append(key)
    if len(good) < role.threshold:
        reasons = "; ".join(f"{k[:12]}: {p}" for k, p in problems.items())
        raise VerificationFailed("root", "certificate",
                                 f"{len(good)} usable root key(s) of the {role.threshold} required ({reasons})")
    pinned = pinning.pinned_keys(gun)
    cas = pinning.pinned_cas(gun)
    if pinned is not None:
        if not any(k.keyid in pinned or canonical_key_id(k) in pinned for k in good):
            raise VerificationFailed("root", "pinning", f"no root key is one of the key IDs pinned for {gun}")
    elif cas is not None:
        if not any(k.certificate is not None and _chains_to(k.certificate, cas) for k in good):
            raise VerificationFailed("root", "pinning", f"no root certificate chains to the CA pinned for {gun}")
    elif not pinning.tofu:
        raise VerificationFailed("root", "pinning",
                                 f"trust on first use is off and no root key or CA is pinned for {gun}")


def _certificate_problem(key: PublicKey, gun: str, moment: datetime.datetime) -> str | None:
    certificate = key.certificate
    if certificate is None:
        return None
    names = certificate.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    cn = str(names[0].value) if names else ""
    if not (cn == gun or (cn.endswith("*") and gun.startswith(cn[:-1]))):
        return f"certificate CN {cn!r} does not name {gun}"
    if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
        return f"certificate is not valid now (valid {certificate.not_valid_before_utc:%Y-%m-%d} to " \
               f"{certificate.not_valid_after_utc:%Y-%m-%d})"
    algorithm = certificate.signature_hash_algorithm
    if algorithm is None or algorithm.name == "sha1":
        return "certificate is signed with SHA-1"
    if isinstance(key.key, rsa.RSAPublicKey) and key.key.key_size < MIN_RSA_BITS:
        return f"RSA key of {key.key.key_size} bits, under {MIN_RSA_BITS}"
    return None


def _chains_to(leaf: x509.Certificate, cas: tuple[x509.Certificate, ...]) -> bool:
    """Whether ``leaf`` is issued by one of ``cas`` (directly; notary root bundles hold no intermediates)."""
    for ca in cas:
        try:
            leaf.verify_directly_issued_by(ca)
            return True
        except (ValueError, TypeError, InvalidSignature):
            continue
    return False
