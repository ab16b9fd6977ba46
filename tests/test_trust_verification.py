"""The pure verification: real notary metadata, and copies tampered one check at a time."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.trust.canonical import encode_canonical
from proxy.trust.errors import TagNotSigned, UnreadableFile, VerificationFailed
from proxy.trust.metadata import parse_time
from proxy.trust.repository import DEFAULT_ROLE_ORDER, TrustedRepository
from proxy.trust.trusted_set import TrustedSet
from tests.tuf_factory import NOW_NS, Key, Repo, envelope, stamp, target

DATA = Path(__file__).parent / "data"
BEFORE_SAMPLES_EXPIRE = parse_time("2026-12-04T00:00:00Z")
AFTER_TIMESTAMP_EXPIRY = parse_time("2026-12-18T00:00:00Z")
V1 = "e8785227ca78448d06744672b522476e4edda7b2e7a11dbbff4b6e514ae3e804"
MULTI = "a1e03cb27dbf2bfdf43dbba1b6eb167fc022e3f0f8e7ce9fbb6b1a6e784bec18"


def sample(name: str) -> dict[str, bytes]:
    folder = DATA / name
    return {p.stem.replace("_", "/"): p.read_bytes() for p in folder.glob("*.json")}


def verify(files: dict[str, bytes], now: int = NOW_NS, previous: dict[str, int] | None = None,
           order: tuple[str, ...] = DEFAULT_ROLE_ORDER) -> TrustedRepository:
    """Load roles in TUF order as the updater does; delegations that fail are skipped."""
    trusted = TrustedSet(files["root"], now, previous)
    trusted.update_timestamp(files["timestamp"])
    trusted.update_snapshot(files["snapshot"])
    trusted.update_targets(files["targets"])
    skipped: dict[str, VerificationFailed] = {}
    for role in order:
        if role != "targets" and role in files and trusted.delegated_in_snapshot(role):
            try:
                trusted.update_delegation(role, files[role])
            except VerificationFailed as exc:
                skipped[role] = exc
    return TrustedRepository.build("gun", trusted, order, skipped)


def refused(files: dict[str, bytes], **kwargs: object) -> VerificationFailed:
    with pytest.raises(VerificationFailed) as caught:
        verify(files, **kwargs)  # type: ignore[arg-type]
    return caught.value


# -- real notary output ----------------------------------------------------------


def test_notary_docker_style_resolves_tags_from_the_delegation() -> None:
    repo = verify(sample("notary-docker-style"), now=BEFORE_SAMPLES_EXPIRE)
    assert repo.resolve("v1").digest == f"sha256:{V1}"
    assert repo.resolve("v1").length == 345
    assert repo.resolve("v1").role == "targets/releases"
    assert repo.resolve("multi").digest == f"sha256:{MULTI}"
    assert repo.digests == {f"sha256:{V1}": {345}, f"sha256:{MULTI}": {645}}


def test_signed_digests_are_those_of_the_captured_manifests() -> None:
    import hashlib

    manifest = (DATA / "registry" / "demo_v1.manifest.json").read_bytes()
    repo = verify(sample("notary-docker-style"), now=BEFORE_SAMPLES_EXPIRE)
    assert repo.resolve("v1").sha256 == hashlib.sha256(manifest).hexdigest()


@pytest.mark.parametrize("name, digest, length", [
    ("docker-push-dct", "cf94420a8d72f2a856c79a2f5e2ac8309d733833f88e7b1b6d3c0c2ac8cc6a8f", 523),
    ("notary-client-snapshot", V1, 345),
])
def test_top_level_targets_sign_v1(name: str, digest: str, length: int) -> None:
    target_v1 = verify(sample(name), now=BEFORE_SAMPLES_EXPIRE).resolve("v1")
    assert (target_v1.sha256, target_v1.length, target_v1.role) == (digest, length, "targets")


def test_unsigned_tag_is_not_signed_with_docker_message() -> None:
    repo = verify(sample("notary-docker-style"), now=BEFORE_SAMPLES_EXPIRE)
    with pytest.raises(TagNotSigned) as caught:
        repo.resolve("dev")
    assert str(caught.value) == "remote trust data does not exist for gun:dev: No valid trust data for dev"


def test_canonical_form_equals_the_signed_bytes_notary_served() -> None:
    for name in ("notary-docker-style", "docker-push-dct", "notary-client-snapshot"):
        for role, raw in sample(name).items():
            served = raw[len(b'{"signed":'): raw.rindex(b',"signatures":')]
            assert encode_canonical(json.loads(raw)["signed"]) == served, (name, role)


def test_real_timestamp_expires_after_fourteen_days() -> None:
    failure = refused(sample("notary-docker-style"), now=AFTER_TIMESTAMP_EXPIRY)
    assert (failure.role, failure.check) == ("timestamp", "expired")
    assert "2026-12-17T08:09:04Z" in failure.detail


def _changed_byte(files: dict[str, bytes]) -> None:
    files["timestamp"] = files["timestamp"].replace(b'"version":6', b'"version":7')


def _targets_of_another_repository(files: dict[str, bytes]) -> None:
    files["targets"] = sample("notary-client-snapshot")["targets"]


def _another_root(files: dict[str, bytes]) -> None:
    files["root"] = sample("docker-push-dct")["root"]


@pytest.mark.parametrize("tamper, role, check, says", [
    (_changed_byte, "timestamp", "signature", "does not verify"),
    (_targets_of_another_repository, "targets", "hash", "signed length is 1370"),
    (_another_root, "timestamp", "signature", "is not a key of this role"),
], ids=["changed-byte", "targets-of-another-repository", "timestamp-under-another-root"])
def test_tampered_real_metadata_is_refused(tamper: Callable[[dict[str, bytes]], None], role: str, check: str,
                                          says: str) -> None:
    files = sample("notary-docker-style")
    tamper(files)
    failure = refused(files, now=BEFORE_SAMPLES_EXPIRE)
    assert (failure.role, failure.check) == (role, check)
    assert says in failure.detail


def test_real_delegation_with_a_flipped_target_byte_is_skipped_and_refuses_v1() -> None:
    files = sample("notary-docker-style")
    files["targets/releases"] = files["targets/releases"].replace(b'"length":345', b'"length":346')
    repo = verify(files, now=BEFORE_SAMPLES_EXPIRE)
    with pytest.raises(VerificationFailed) as caught:
        repo.resolve("v1")
    assert (caught.value.role, caught.value.check) == ("targets/releases", "hash")


# -- made here, one check at a time ---------------------------------------------------


def test_standard_repo_resolves() -> None:
    repo = verify(Repo.standard().files())
    assert repo.resolve("v1").digest == "sha256:" + "cd" * 32
    assert repo.resolve("base").role == "targets"


@pytest.mark.parametrize("keytype, method", [
    ("ed25519", None), ("ecdsa", None), ("ecdsa-x509", None),
    ("rsa", "rsapss"), ("rsa-x509", "rsapss"), ("rsa", "rsapkcs1v15"),
])
def test_every_key_type_verifies(keytype: str, method: str | None) -> None:
    repo = Repo.standard()
    repo.keys["targets"] = Key.make(keytype, cn=repo.gun, method=method)
    assert verify(repo.files()).resolve("base").role == "targets"


def test_signature_method_must_fit_the_key_type() -> None:
    repo = Repo.standard()
    files = repo.files()
    document = json.loads(files["timestamp"])
    document["signatures"][0]["method"] = "ecdsa"
    files["timestamp"] = json.dumps(document).encode()
    failure = refused(files)
    assert failure.check == "signature"
    assert "method 'ecdsa' is not allowed for a ed25519 key" in failure.detail


def test_below_threshold_is_refused() -> None:
    repo = Repo.standard()
    repo.thresholds["targets"] = 2
    failure = refused(repo.files())
    assert (failure.role, failure.check) == ("targets", "signature")
    assert failure.detail.startswith("1 valid signature(s) of the 2 required")


def test_key_id_that_does_not_match_its_key_is_refused() -> None:
    repo = Repo.standard()
    signed = repo.root_signed()
    keys = signed["keys"]
    wrong = "0" * 64
    keys[wrong] = keys.pop(repo.keys["targets"].keyid)
    failure = refused({**repo.files(), "root": envelope(signed, [repo.keys["root"]])})
    assert (failure.role, failure.check) == ("root", "key")
    assert f"key ID {wrong} does not match its key" in failure.detail


def test_root_signed_by_another_key_is_refused() -> None:
    repo = Repo.standard()
    files = repo.files(signers={"root": [Key.make("ecdsa")]})
    failure = refused(files)
    assert (failure.role, failure.check) == ("root", "signature")


@pytest.mark.parametrize("role", ["timestamp", "snapshot", "targets"])
def test_expired_top_level_role_is_refused(role: str) -> None:
    repo = Repo.standard()
    repo.expires[role] = stamp(-0.001)
    failure = refused(repo.files())
    assert (failure.role, failure.check) == (role, "expired")


def test_expiry_is_exact_to_the_nanosecond_and_honours_offsets() -> None:
    assert parse_time("2026-12-04T00:00:00.000000001Z") == NOW_NS + 1
    assert parse_time("2026-12-04T01:00:00+01:00") == NOW_NS
    assert parse_time("2026-12-03T19:00:00.5-05:00") == NOW_NS + 500_000_000
    repo = Repo.standard()
    repo.expires["timestamp"] = "2026-12-04T00:00:00.000000001Z"
    assert verify(repo.files()).resolve("v1")
    repo.expires["timestamp"] = "2026-12-04T00:00:00Z"
    assert refused(repo.files()).check == "expired"


@pytest.mark.parametrize("text", ["2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-12-04 00:00:00", "soon"])
def test_bad_expiry_strings_are_a_format_error(text: str) -> None:
    repo = Repo.standard()
    repo.expires["timestamp"] = text
    assert refused(repo.files()).check == "format"


@pytest.mark.parametrize("role", ["timestamp", "snapshot", "targets"])
def test_rollback_below_a_version_seen_before_is_refused(role: str) -> None:
    repo = Repo.standard()
    previous = {role: repo.versions[role] + 1}
    failure = refused(repo.files(), previous=previous)
    assert (failure.role, failure.check) == (role, "rollback")


def test_snapshot_that_differs_from_the_timestamp_listing_is_refused() -> None:
    repo = Repo.standard()
    files = repo.files()
    other = repo.copy()
    other.versions["snapshot"] += 1
    files["snapshot"] = other.files()["snapshot"]
    failure = refused(files)
    assert (failure.role, failure.check) == ("snapshot", "hash")


def test_delegation_takes_precedence_over_targets() -> None:
    repo = Repo.standard()
    repo.targets["targets"]["v1"] = target("ee" * 32, 100)
    assert verify(repo.files()).resolve("v1").digest == "sha256:" + "cd" * 32


def test_role_order_setting_can_exclude_targets() -> None:
    repo = verify(Repo.standard().files(), order=("targets/releases",))
    with pytest.raises(TagNotSigned):
        repo.resolve("base")


def test_expired_delegation_is_skipped_and_named_in_the_refusal() -> None:
    repo = Repo.standard()
    repo.expires["targets/releases"] = stamp(-1)
    repo.targets["targets"]["v1"] = target("ee" * 32, 100)
    resolved = verify(repo.files())
    assert resolved.resolve("v1").role == "targets"  # the trusted parent still signs it
    del repo.targets["targets"]["v1"]
    with pytest.raises(VerificationFailed) as caught:
        verify(repo.files()).resolve("v1")
    assert (caught.value.role, caught.value.check) == ("targets/releases", "expired")


def test_delegation_signing_outside_its_paths_is_refused() -> None:
    repo = Repo.standard()
    repo.delegations["targets/releases"]["paths"] = ["release-"]
    with pytest.raises(VerificationFailed) as caught:
        verify(repo.files()).resolve("v1")
    assert (caught.value.role, caught.value.check) == ("targets/releases", "paths")
    assert "outside the paths delegated to it" in str(caught.value)


def test_delegation_signed_by_a_key_the_parent_does_not_name_is_skipped() -> None:
    repo = Repo.standard()
    files = repo.files(signers={"targets/releases": [Key.make("ecdsa")]})
    with pytest.raises(VerificationFailed) as caught:
        verify(files).resolve("v1")
    assert (caught.value.role, caught.value.check) == ("targets/releases", "signature")
    assert "is not a key of this role" in caught.value.detail


def _rotated(repo: Repo) -> tuple[Repo, Key]:
    new = repo.copy()
    old_root = repo.keys["root"]
    new.keys["root"] = Key.make("ecdsa-x509", cn=repo.gun)
    new.versions["root"] += 1
    return new, old_root


def test_root_rotation_signed_by_old_and_new_keys_is_accepted() -> None:
    repo = Repo.standard()
    new, old_key = _rotated(repo)
    rotated_root = envelope(new.root_signed(), [old_key, new.keys["root"]])
    trusted = TrustedSet(repo.files()["root"], NOW_NS)
    trusted.update_root(rotated_root)
    files = new.files()
    trusted.update_timestamp(files["timestamp"])
    assert trusted.root.version == 2


def test_root_rotation_without_the_old_keys_is_refused() -> None:
    repo = Repo.standard()
    new, _ = _rotated(repo)
    trusted = TrustedSet(repo.files()["root"], NOW_NS)
    with pytest.raises(VerificationFailed) as caught:
        trusted.update_root(new.files()["root"])
    assert (caught.value.role, caught.value.check) == ("root", "rotation")


def test_not_json_is_an_unreadable_file_naming_the_role() -> None:
    files = Repo.standard().files()
    files["timestamp"] = b"<html>502 Bad Gateway</html>"
    failure = refused(files)
    assert isinstance(failure, UnreadableFile)
    assert (failure.role, failure.check) == ("timestamp", "format")


def test_canonical_json_writes_control_characters_raw() -> None:
    assert encode_canonical({"b": "x\ny\\", "a": ["é", 1]}) == '{"a":["é",1],"b":"x\ny\\\\"}'.encode()


def test_nested_delegation_is_narrowed_by_every_parent() -> None:
    repo = Repo.standard()
    repo.keys["targets/releases/team"] = Key.make("ed25519")
    repo.versions["targets/releases/team"] = 1
    repo.expires["targets/releases/team"] = stamp(100)
    repo.delegations["targets/releases"]["paths"] = ["v"]
    repo.delegations["targets/releases/team"] = {"paths": ["v1", "x"], "threshold": 1}
    repo.targets["targets/releases/team"] = {"v1": target("aa" * 32, 10), "x1": target("bb" * 32, 10)}
    order = ("targets/releases/team", "targets/releases", "targets")
    files = repo.files()
    trusted = TrustedSet(files["root"], NOW_NS)
    trusted.update_timestamp(files["timestamp"])
    trusted.update_snapshot(files["snapshot"])
    trusted.update_targets(files["targets"])
    trusted.update_delegation("targets/releases", files["targets/releases"])
    trusted.update_delegation("targets/releases/team", files["targets/releases/team"])
    resolved = TrustedRepository.build("gun", trusted, order, {})
    assert resolved.resolve("v1").role == "targets/releases/team"
    with pytest.raises(VerificationFailed) as caught:  # "x" is the team's, but releases may only sign "v…"
        resolved.resolve("x1")
    assert (caught.value.role, caught.value.check) == ("targets/releases/team", "paths")
