"""Root certificate rules and trust pinning, on roots made in the test."""

from __future__ import annotations

import base64
import datetime
import json
import multiprocessing
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from proxy.trust.errors import VerificationFailed
from proxy.trust.keys import key_id
from proxy.trust.metadata import parse_envelope, parse_root
from proxy.trust.pinning import Pinning, canonical_key_id, check_root
from proxy.trust.store import StoredTrust, TrustStore
from tests.tuf_factory import NOW, NOW_NS, Key, Repo

GUN = "127.0.0.1:5000/library/demo"


def certificate_key(cn: str, *, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
                    days: float = 3650,
                    private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None) -> Key:
    """A root key whose certificate is made to order."""
    private = private or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name, issuer_key = issuer or (subject, private)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=days))
        .sign(issuer_key, hashes.SHA256())
    )
    keytype = "rsa-x509" if isinstance(private, rsa.RSAPrivateKey) else "ecdsa-x509"
    public = {"keytype": keytype, "keyval": {"private": None, "public": base64.b64encode(
        certificate.public_bytes(serialization.Encoding.PEM)).decode()}}
    return Key(keytype=keytype, private=private, public=public, keyid=key_id(public),
               method="rsapss" if keytype.startswith("rsa") else "ecdsa")


def sha1_certificate_key(cn: str) -> Key:
    """cryptography no longer signs with SHA-1; openssl still does."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        key_file, cert_file = Path(directory, "k.pem"), Path(directory, "c.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha1", "-days", "30",
                        "-subj", "/CN=" + cn.replace("/", "\\/"), "-keyout", key_file, "-out", cert_file],
                       check=True, capture_output=True)
        private = serialization.load_pem_private_key(key_file.read_bytes(), None)
        pem = cert_file.read_bytes()
    assert isinstance(private, rsa.RSAPrivateKey)
    public = {"keytype": "rsa-x509", "keyval": {"private": None, "public": base64.b64encode(pem).decode()}}
    return Key(keytype="rsa-x509", private=private, public=public, keyid=key_id(public), method="rsapss")


def root_with(key: Key):
    repo = Repo.standard()
    repo.keys["root"] = key
    return parse_root(parse_envelope("root", repo.files()["root"]))


def refused(root, gun: str = GUN, pinning: Pinning = Pinning(), now: int = NOW_NS) -> VerificationFailed:
    with pytest.raises(VerificationFailed) as caught:
        check_root(root, gun, pinning, now)
    return caught.value


def test_certificate_naming_the_gun_is_accepted() -> None:
    check_root(root_with(certificate_key(GUN)), GUN, Pinning(), NOW_NS)


def test_wildcard_cn_covers_a_prefix() -> None:
    root = root_with(certificate_key("127.0.0.1:5000/library/*"))
    check_root(root, GUN, Pinning(), NOW_NS)
    assert "does not name 127.0.0.1:5000/other/x" in refused(root, "127.0.0.1:5000/other/x").detail


@pytest.mark.parametrize("key, reason", [
    (lambda: certificate_key("127.0.0.1:5000/library/other"), "does not name"),
    (lambda: certificate_key(GUN, days=-0.5), "is not valid now"),
    (lambda: sha1_certificate_key(GUN), "SHA-1"),
    (lambda: certificate_key(GUN, private=rsa.generate_private_key(public_exponent=65537, key_size=1024)),
     "RSA key of 1024 bits"),
])
def test_unusable_root_certificates_are_refused(key, reason: str) -> None:
    failure = refused(root_with(key()))
    assert (failure.role, failure.check) == ("root", "certificate")
    assert reason in failure.detail


def test_pinned_key_id_either_form() -> None:
    key = certificate_key(GUN)
    root = root_with(key)
    check_root(root, GUN, Pinning(keys={GUN: frozenset({key.keyid})}), NOW_NS)
    check_root(root, GUN, Pinning(keys={GUN: frozenset({canonical_key_id(root.keys[key.keyid])})}), NOW_NS)
    assert refused(root, pinning=Pinning(keys={GUN: frozenset({"f" * 64})})).check == "pinning"


def test_pinned_ca_by_longest_prefix() -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "site CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(NOW - datetime.timedelta(days=1))
          .not_valid_after(NOW + datetime.timedelta(days=10)).sign(ca_key, hashes.SHA256()))
    issued = root_with(certificate_key(GUN, issuer=(ca_name, ca_key)))
    self_signed = root_with(certificate_key(GUN))
    other_ca = x509.load_pem_x509_certificate(base64.b64decode(
        certificate_key("x").public["keyval"]["public"]))
    pinning = Pinning(cas={"127.0.0.1:5000/": (other_ca,), "127.0.0.1:5000/library/": (ca,)})
    check_root(issued, GUN, pinning, NOW_NS)
    assert "chains to the CA pinned" in refused(self_signed, pinning=pinning).detail


def test_tofu_off_refuses_an_unpinned_gun() -> None:
    failure = refused(root_with(certificate_key(GUN)), pinning=Pinning(tofu=False))
    assert "trust on first use is off" in failure.detail


def _save_many(directory: str, start: int) -> None:
    store = TrustStore(Path(directory))
    for version in range(start, start + 40):
        store.save(GUN, StoredTrust(root=json.dumps({"v": version}).encode(), root_version=1,
                                    versions={"timestamp": version, f"w{start}": version}))


def test_store_merges_concurrent_writers_without_lowering_a_version(tmp_path: Path) -> None:
    workers = [multiprocessing.Process(target=_save_many, args=(str(tmp_path), start)) for start in (1, 100, 200)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    stored = TrustStore(tmp_path).load(GUN)
    assert stored is not None
    assert stored.versions == {"timestamp": 239, "w1": 40, "w100": 139, "w200": 239}


def test_store_keeps_the_newer_root(tmp_path: Path) -> None:
    store = TrustStore(tmp_path)
    store.save(GUN, StoredTrust(root=b"root-3", root_version=3, versions={"root": 3}))
    merged = store.save(GUN, StoredTrust(root=b"root-2", root_version=2, versions={"root": 2}))
    assert (merged.root, merged.versions) == (b"root-3", {"root": 3})


def test_corrupt_state_file_is_an_error_not_a_fresh_start(tmp_path: Path) -> None:
    from proxy.trust.store import StateError

    store = TrustStore(tmp_path)
    store.directory.mkdir(parents=True)
    store.path(GUN).write_text("{not json")
    with pytest.raises(StateError) as caught:
        store.load(GUN)
    assert "; to trust this GUN anew, remove " in str(caught.value)
