"""Attacks on the trust data, against real notary-server data tampered on its way to pullgate.

Each attack is refused with its own message, and the client gets none of the
manifest. A few attacks need files that no honest server produces (a snapshot
rolled back under a fresh timestamp, an expired delegation): those are made
and signed in the test with keys of its own (tests/tuf_factory.py) and served
by the same front, for a GUN the real server does not know.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from proxy.trust.store import TrustStore
from tests.faults import Fault, FaultServer, RawServer
from tests.realenv.images import manifest_info, push
from tests.realenv.pullgate import Proxy, start_proxy
from tests.realenv.sandbox import Sandbox
from tests.realenv.signing import DELEGATION_ROLE
from tests.realenv.testing import missing, needs
from tests.tuf_factory import Key, Repo, stamp, target

_names = itertools.count()
ZERO_KEY = "0" * 64


@dataclass
class Signed:
    """A repository of its own, signed with the real notary CLI like library/demo."""

    name: str
    gun: str
    digest: str
    length: int


def sign_in_releases(sandbox: Sandbox, gun: str, targets: dict[str, tuple[int, str]]) -> None:
    """A new trust repository for ``gun``, as docker's content trust sets one up, whose
    targets/releases delegation signs ``targets`` (tag -> length, sha256 hex)."""
    cli = sandbox.notary_cli
    cli.init(gun)
    cli.rotate_snapshot_to_server(gun)
    cli.publish(gun)
    cli.add_delegation(gun, DELEGATION_ROLE)
    for tag, (length, sha256_hex) in targets.items():
        cli.addhash(gun, tag, length, sha256_hex, [DELEGATION_ROLE])
    cli.publish(gun)


def new_signed_repository(sandbox: Sandbox) -> Signed:
    name = f"library/attack{next(_names)}"
    gun = sandbox.gun(name)
    source = sandbox.images["demo:v1"]
    push(f"docker://{source.ref}", f"{gun}:v1", workdir=sandbox.workdir)
    info = manifest_info(sandbox.registry.url, name, "v1")
    sign_in_releases(sandbox, gun, {"v1": (info.length, info.sha256_hex)})
    return Signed(name=name, gun=gun, digest=info.digest, length=info.length)


@pytest.fixture
def repo(sandbox: Sandbox) -> Signed:
    return new_signed_repository(sandbox)


@pytest.fixture
def front(sandbox: Sandbox) -> Iterator[FaultServer]:
    server = FaultServer(sandbox.notary.url, verify=sandbox.ca.ssl_context()).start()
    yield server
    server.stop()


def proxy_via(sandbox: Sandbox, front: FaultServer, workdir: Path, *extra: str,
              env: dict[str, str] | None = None) -> Proxy:
    return start_proxy(workdir, sandbox.registry.url, front.url, sandbox.ca.ca_cert,
                       extra=("--gun-prefix", sandbox.registry.host, "--refresh-interval", "0", *extra), env=env)


def in_the_future(offset: str) -> dict[str, str]:
    """Environment that runs a process ``offset`` ahead (libfaketime, preloaded into it alone)."""
    needs("faketime")
    libraries = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    if not libraries:
        missing("libfaketime.so.1 is not installed (Debian package libfaketime)")
    return {"LD_PRELOAD": str(libraries[0]), "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


@pytest.fixture
def gate(sandbox: Sandbox, front: FaultServer, tmp_path: Path) -> Iterator[Proxy]:
    running = proxy_via(sandbox, front, tmp_path)
    yield running
    running.stop()


def pull(proxy: Proxy, name: str, tag: str = "v1") -> httpx.Response:
    return httpx.get(f"{proxy.url}/v2/{name}/manifests/{tag}", timeout=30)


def refusal(response: httpx.Response, status: int = 403) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert "schemaVersion" not in response.text  # none of the manifest
    return response.json()["errors"][0]


def check_of(response: httpx.Response) -> tuple[str, str]:
    error = refusal(response)
    assert error["code"] == "DENIED"
    return error["detail"]["role"], error["detail"]["check"]


def tuf_path(gun: str, filename: str) -> str:
    return f"/v2/{gun}/_trust/tuf/{filename}"


def fetch(sandbox: Sandbox, gun: str, filename: str) -> bytes:
    response = httpx.get(sandbox.notary.url + tuf_path(gun, filename), verify=sandbox.ca.ssl_context())
    response.raise_for_status()
    return response.content


# -- real data, tampered ------------------------------------------------------------------------


def test_signed_repository_is_served(gate: Proxy, repo: Signed) -> None:
    response = pull(gate, repo.name)
    assert response.status_code == 200
    assert response.headers["docker-content-digest"] == repo.digest


def test_timestamp_rollback_is_refused(gate: Proxy, sandbox: Sandbox, front: FaultServer, repo: Signed) -> None:
    old = fetch(sandbox, repo.gun, "timestamp.json")
    assert pull(gate, repo.name).status_code == 200
    sandbox.notary_cli.addhash(repo.gun, "v2", repo.length, repo.digest, [DELEGATION_ROLE])
    sandbox.notary_cli.publish(repo.gun)
    assert pull(gate, repo.name, "v2").status_code == 200  # the newer versions are now trusted
    front.faults[tuf_path(repo.gun, "timestamp.json")] = Fault(body=old)
    response = pull(gate, repo.name)
    assert check_of(response) == ("timestamp", "rollback")
    assert "is older than trusted version" in refusal(response)["message"]


def test_snapshot_from_an_older_publish_is_mix_and_match(gate: Proxy, sandbox: Sandbox, front: FaultServer,
                                                         repo: Signed) -> None:
    old_snapshot = fetch(sandbox, repo.gun, "snapshot.json")
    sandbox.notary_cli.addhash(repo.gun, "v2", repo.length, repo.digest, [DELEGATION_ROLE])
    sandbox.notary_cli.publish(repo.gun)
    signed_length = json.loads(fetch(sandbox, repo.gun, "timestamp.json"))["signed"]["meta"]["snapshot"]["length"]
    front.faults[f"/v2/{repo.gun}/_trust/tuf/snapshot."] = Fault(body=old_snapshot)
    # notary drops trailing zeros from expiry nanoseconds, so the older snapshot may be longer
    # than the length the new timestamp signs: its download is then cut off at that bound.
    expected = "length" if len(old_snapshot) > signed_length else "hash"
    assert check_of(pull(gate, repo.name)) == ("snapshot", expected)


@pytest.mark.parametrize("wrong", [-10, 10], ids=["shorter", "longer"])
def test_a_wrong_signed_length_is_refused_whether_or_not_the_manifest_is_cached(
        gate: Proxy, sandbox: Sandbox, repo: Signed, wrong: int) -> None:
    sandbox.notary_cli.addhash(repo.gun, "bad", repo.length + wrong, repo.digest, [DELEGATION_ROLE])
    sandbox.notary_cli.publish(repo.gun)
    cold = pull(gate, repo.name, "bad")
    assert pull(gate, repo.name).status_code == 200  # the same digest, rightly signed, is now cached
    warm = pull(gate, repo.name, "bad")
    for response in (cold, warm):
        assert response.status_code == 502
        assert response.json()["errors"][0]["code"] == "MANIFEST_INVALID"
        assert "schemaVersion" not in response.text
    assert warm.json()["errors"][0]["message"].endswith(
        f"expected {repo.digest} ({repo.length + wrong} bytes), got {repo.digest} ({repo.length} bytes); "
        "the digest matches, so the tag was signed with a wrong size")
    by_digest = pull(gate, repo.name, repo.digest)
    assert by_digest.status_code == 200, "the tag signed with the right length still allows its digest"
    assert len(by_digest.content) == repo.length


def test_signed_target_names_that_are_no_tags_are_not_listed(gate: Proxy, sandbox: Sandbox, repo: Signed) -> None:
    for name in ("a/b", "x y>", "t" * 129, "v2"):
        sandbox.notary_cli.addhash(repo.gun, name, repo.length, repo.digest, [DELEGATION_ROLE])
    sandbox.notary_cli.publish(repo.gun)
    response = httpx.get(f"{gate.url}/v2/{repo.name}/tags/list", timeout=30)
    assert response.json() == {"name": repo.name, "tags": ["v1", "v2"]}


@pytest.mark.parametrize("wrong", [-10, 10], ids=["shorter", "longer"])
def test_a_wrong_signed_length_of_an_index_child_does_not_hide_the_size_its_index_gives(
        gate: Proxy, sandbox: Sandbox, wrong: int) -> None:
    """A fresh proxy asked for the child first: the tag signing it wrongly is all it knows of it."""
    name = f"library/attackidx{next(_names)}"
    gun = sandbox.gun(name)
    push(f"docker://{sandbox.images['demo:multi'].ref}", f"{gun}:multi", all_images=True, workdir=sandbox.workdir)
    index = manifest_info(sandbox.registry.url, name, "multi")
    child = httpx.get(f"{sandbox.registry.url}/v2/{name}/manifests/multi",
                      headers={"Accept": index.media_type}).json()["manifests"][0]
    sign_in_releases(sandbox, gun, {"multi": (index.length, index.sha256_hex),
                                    "badchild": (child["size"] + wrong, child["digest"].removeprefix("sha256:"))})
    by_digest = pull(gate, name, child["digest"])
    assert (by_digest.status_code, len(by_digest.content)) == (200, child["size"])
    refused = pull(gate, name, "badchild")
    assert refused.status_code == 502
    assert refused.json()["errors"][0]["message"].endswith(
        f"expected {child['digest']} ({child['size'] + wrong} bytes), got {child['digest']} ({child['size']} bytes); "
        "the digest matches, so the tag was signed with a wrong size")


def test_state_removed_while_running_is_refused_not_trusted_anew(gate: Proxy, sandbox: Sandbox, repo: Signed) -> None:
    assert pull(gate, repo.name).status_code == 200
    shutil.rmtree(gate.state_dir)
    sandbox.notary_cli.addhash(repo.gun, "v2", repo.length, repo.digest, [DELEGATION_ROLE])
    sandbox.notary_cli.publish(repo.gun)  # a new timestamp: the next pull walks from the trusted root
    response = pull(gate, repo.name)
    assert refusal(response, 503)["message"] == (
        f"trusted state {TrustStore(gate.state_dir).path(repo.gun)} has vanished with its lock file; "
        "restore it, or restart pullgate to trust this GUN anew")
    assert not (gate.state_dir / "trust").exists(), "nothing was trusted on first use again"


def test_a_redirect_from_https_to_plain_http_is_refused(sandbox: Sandbox, front: FaultServer, repo: Signed,
                                                        tmp_path: Path) -> None:
    """The front serves the real trust data over plain http: a root on first use must not come that way."""
    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        path = request.split(b" ")[1].decode()
        writer.write(f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {front.url}{path}\r\n"
                     "Content-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(sandbox.ca.server_cert, sandbox.ca.server_key)
    server = RawServer(redirect, tls=tls).start()
    running = start_proxy(tmp_path, sandbox.registry.url, f"https://127.0.0.1:{server.port}", sandbox.ca.ca_cert,
                          extra=("--gun-prefix", sandbox.registry.host))
    try:
        response = pull(running, repo.name)
    finally:
        running.stop()
        server.stop()
    assert refusal(response, 503)["message"] == (
        f"cannot verify {repo.gun}: trust server 127.0.0.1:{server.port} is unavailable: root.json: InsecureRedirect: "
        f"redirect from 127.0.0.1 to plain http ({front.url}{tuf_path(repo.gun, 'root.json')}) refused")
    assert not front.sent, "nothing was asked over plain http"


@pytest.mark.parametrize("path, body, reason", [
    ("root.json", b"<html>Down for maintenance</html>", "not JSON: Expecting value: line 1 column 1 (char 0)"),
    ("timestamp.json", b'{"signed": {', "not JSON: Expecting property name enclosed in double quotes: line 1 "
                                          "column 13 (char 12)"),
    ("root.json", b"[1, 2]", "not a JSON object but list"),
    ("timestamp.json", b"[" * 100_000 + b"]" * 100_000, "not JSON: maximum recursion depth exceeded while "
                                                             "decoding a JSON array from a unicode string"),
], ids=["html", "cut-off", "array", "deep"])
def test_an_answer_that_is_no_json_object_is_cannot_verify_not_a_failed_check(
        gate: Proxy, front: FaultServer, repo: Signed, path: str, body: bytes, reason: str) -> None:
    """For root and timestamp, which no parent gives a hash; other files fail their signed hash first."""
    front.faults[f"/v2/{repo.gun}/_trust/tuf/{path}"] = Fault(body=body, headers={"Content-Type": "text/html"})
    role = path.removesuffix(".json").removesuffix(".")
    assert refusal(pull(gate, repo.name), 503)["message"] == (
        f"cannot verify {repo.gun}: trust server {front.url.removeprefix('http://')} is unavailable: "
        f"{role}: the answer is not trust data ({reason})")


def test_oversized_timestamp_is_cut_off_at_its_bound(gate: Proxy, front: FaultServer, repo: Signed) -> None:
    front.faults[tuf_path(repo.gun, "timestamp.json")] = Fault(body=b"{" + b" " * (2 << 20) + b"}")
    response = pull(gate, repo.name)
    assert check_of(response) == ("timestamp", "length")
    assert "longer than its bound of 1048576 bytes" in refusal(response)["message"]


def test_oversized_delegation_is_cut_off_at_the_snapshot_length(gate: Proxy, front: FaultServer,
                                                                repo: Signed) -> None:
    front.faults[f"/v2/{repo.gun}/_trust/tuf/targets/releases."] = Fault(mutate=lambda b: b + b" " * 100_000)
    assert check_of(pull(gate, repo.name)) == ("targets/releases", "length")


def test_bad_signature_is_refused(gate: Proxy, front: FaultServer, repo: Signed) -> None:
    front.faults[tuf_path(repo.gun, "timestamp.json")] = Fault(mutate=lambda b: b.replace(b'"sig":"', b'"sig":"AA'))
    assert check_of(pull(gate, repo.name)) == ("timestamp", "signature")


def test_root_certificate_of_another_gun_is_refused(gate: Proxy, sandbox: Sandbox, front: FaultServer,
                                                    repo: Signed) -> None:
    front.faults[tuf_path(repo.gun, "root.json")] = Fault(body=fetch(sandbox, sandbox.gun("library/demo"),
                                                                     "root.json"))
    response = pull(gate, repo.name)
    assert check_of(response) == ("root", "certificate")
    assert f"does not name {repo.gun}" in refusal(response)["message"]


def test_expired_timestamp_is_refused(sandbox: Sandbox, front: FaultServer, repo: Signed, tmp_path: Path) -> None:
    running = proxy_via(sandbox, front, tmp_path, env=in_the_future("+15d"))
    try:
        response = pull(running, repo.name)
    finally:
        running.stop()
    assert check_of(response) == ("timestamp", "expired")


def test_root_rotated_without_the_old_keys_is_refused(gate: Proxy, sandbox: Sandbox, front: FaultServer,
                                                      repo: Signed) -> None:
    assert pull(gate, repo.name).status_code == 200  # the real root (version 2) is now trusted
    sandbox.notary_cli.addhash(repo.gun, "v2", repo.length, repo.digest, [DELEGATION_ROLE])
    sandbox.notary_cli.publish(repo.gun)  # a new timestamp, so the next pull walks from the root
    forged = Repo.standard()
    forged.gun = repo.gun
    forged.keys["root"] = Key.make("ecdsa-x509", cn=repo.gun)
    forged.versions["root"] = 3
    front.faults[tuf_path(repo.gun, "root.json")] = Fault(body=forged.files()["root"])
    response = pull(gate, repo.name)
    assert check_of(response) == ("root", "rotation")
    assert "not signed by the trusted root keys" in refusal(response)["message"]


def test_real_root_and_targets_key_rotation_is_accepted(gate: Proxy, sandbox: Sandbox, repo: Signed) -> None:
    assert pull(gate, repo.name).status_code == 200
    cli = sandbox.notary_cli
    cli.run("key", "rotate", repo.gun, "root", input_text="yes\n")
    cli.run("key", "rotate", repo.gun, "targets", input_text="yes\n")
    cli.publish(repo.gun)
    response = pull(gate, repo.name)
    assert response.status_code == 200, response.text
    stored = json.loads(next((gate.state_dir / "trust").glob("*attack*.json")).read_text())
    # root 2 -> 3 (new root key) -> 4 (new targets key): two steps walked, each signed by old and new keys
    assert stored["root_version"] == 4


def test_re_signed_tag_is_served_as_the_new_digest(sandbox: Sandbox, front: FaultServer, repo: Signed,
                                                   tmp_path: Path) -> None:
    running = proxy_via(sandbox, front, tmp_path)
    try:
        assert pull(running, repo.name).headers["docker-content-digest"] == repo.digest
        other = sandbox.images["demo:multi"]
        push(f"docker://{other.ref}", f"{repo.gun}:v1", all_images=True, workdir=sandbox.workdir)
        sandbox.notary_cli.addhash(repo.gun, "v1", other.length, other.digest, [DELEGATION_ROLE])
        sandbox.notary_cli.publish(repo.gun)
        before = len(front.seen)
        assert pull(running, repo.name).headers["docker-content-digest"] == other.digest
        refetched = [s.path for s in front.seen[before:] if s.path.endswith("/timestamp.json")]
        assert len(refetched) == 1, "the timestamp that showed the change is not fetched a second time"
        sandbox.notary_cli.remove(repo.gun, "v1", [DELEGATION_ROLE])
        sandbox.notary_cli.publish(repo.gun)
        assert "No valid trust data for v1" in refusal(pull(running, repo.name))["message"]
    finally:
        running.stop()


def test_stopped_trust_server_fails_closed_then_recovers(sandbox: Sandbox, repo: Signed, tmp_path: Path) -> None:
    front = FaultServer(sandbox.notary.url, verify=sandbox.ca.ssl_context()).start()
    running = proxy_via(sandbox, front, tmp_path)
    try:
        assert pull(running, repo.name).status_code == 200
        front.stop()
        error = refusal(pull(running, repo.name), status=503)
        assert error["code"] == "UNAVAILABLE" and "does not exist" not in error["message"]
        front = FaultServer(sandbox.notary.url, verify=sandbox.ca.ssl_context(), port=front.port).start()
        assert pull(running, repo.name).status_code == 200
    finally:
        running.stop()
        front.stop()


@pytest.mark.parametrize("outage", [Fault(status=503, body=b"down"),
                                    Fault(body=b"<html>Down for maintenance</html>", headers={"Content-Type": "text/html"})],
                         ids=["503", "html-page"])
def test_grace_bridges_an_outage_only_when_configured(sandbox: Sandbox, repo: Signed, tmp_path: Path,
                                                      outage: Fault) -> None:
    front = FaultServer(sandbox.notary.url, verify=sandbox.ca.ssl_context()).start()
    config = tmp_path / "grace.yaml"
    config.write_text("trust:\n  grace: 300\n")
    running = proxy_via(sandbox, front, tmp_path, "--config", str(config))
    try:
        assert pull(running, repo.name).status_code == 200
        front.faults["/"] = outage
        assert pull(running, repo.name).status_code == 200
        assert pull(running, repo.name, "v9").status_code == 403  # still only what was signed
    finally:
        running.stop()
        front.stop()


def test_token_protected_trust_server(sandbox: Sandbox, repo: Signed, tmp_path: Path) -> None:
    front = FaultServer(sandbox.notary.url, verify=sandbox.ca.ssl_context(), token="t0ken").start()
    running = proxy_via(sandbox, front, tmp_path, "--refresh-interval", "0")
    try:
        assert pull(running, repo.name).status_code == 200
        assert pull(running, repo.name).status_code == 200
        token_fetches = [s for s in front.seen if s.path == "/token"]
        assert len(token_fetches) == 1, "the token is cached until it expires"
        challenged = [s for s in front.seen if s.path != "/token" and "authorization" not in s.headers]
        assert len(challenged) == 1, "only the first request went without the token"
    finally:
        running.stop()
        front.stop()


def test_pinned_key_ids_and_tofu_off(sandbox: Sandbox, front: FaultServer, repo: Signed, tmp_path: Path) -> None:
    root = json.loads(fetch(sandbox, repo.gun, "root.json"))["signed"]
    root_key = root["roles"]["root"]["keyids"][0]
    config = tmp_path / "pin.yaml"
    config.write_text(f"upstream:\n  pinning:\n    disable_tofu: true\n    keys:\n      {repo.gun}: ['{root_key}']\n")
    running = proxy_via(sandbox, front, tmp_path, "--config", str(config))
    try:
        assert pull(running, repo.name).status_code == 200
        response = pull(running, "library/demo")
        assert check_of(response) == ("root", "pinning")
        assert "trust on first use is off" in refusal(response)["message"]
    finally:
        running.stop()
    config.write_text(f"upstream:\n  pinning:\n    keys:\n      {repo.gun}: ['{ZERO_KEY}']\n")
    running = proxy_via(sandbox, front, tmp_path / "other", "--config", str(config))
    try:
        assert check_of(pull(running, repo.name)) == ("root", "pinning")
    finally:
        running.stop()


def test_pinned_ca_the_root_does_not_chain_to(sandbox: Sandbox, front: FaultServer, repo: Signed,
                                              tmp_path: Path) -> None:
    config = tmp_path / "ca.yaml"
    config.write_text(f"upstream:\n  pinning:\n    ca:\n      {sandbox.registry.host}/: {sandbox.ca.ca_cert}\n")
    running = proxy_via(sandbox, front, tmp_path, "--config", str(config))
    try:
        response = pull(running, repo.name)
        assert check_of(response) == ("root", "pinning")
        assert "chains to the CA pinned" in refusal(response)["message"]
    finally:
        running.stop()


def test_role_setting_restricts_which_roles_vouch(sandbox: Sandbox, front: FaultServer, tmp_path: Path) -> None:
    image = sandbox.images["tsigned:v1"]
    config = tmp_path / "roles.yaml"
    config.write_text("trust:\n  repositories:\n    library/tsigned: {roles: [targets/releases]}\n")
    running = proxy_via(sandbox, front, tmp_path, "--config", str(config))
    try:
        assert "No valid trust data for v1" in refusal(pull(running, image.name))["message"]
        assert pull(running, "library/demo").status_code == 200
    finally:
        running.stop()


# -- files no honest server makes, signed in the test -------------------------------------------------


def serve_forged(front: FaultServer, gun: str, files: dict[str, bytes]) -> None:
    for role, data in files.items():
        front.faults[tuf_path(gun, f"{role}.json")] = Fault(status=200, body=data)
        front.faults[f"/v2/{gun}/_trust/tuf/{role}."] = Fault(status=404, body=b"")


def forged_repo(sandbox: Sandbox, front: FaultServer, name: str) -> tuple[Repo, str]:
    forged = Repo.standard()
    forged.gun = sandbox.gun(name)
    forged.keys["root"] = Key.make("ecdsa-x509", cn=forged.gun)
    forged.targets["targets/releases"] = {"v1": target(sandbox.images["demo:v1"].digest[7:],
                                                       sandbox.images["demo:v1"].length)}
    return forged, forged.gun


@pytest.mark.parametrize("role", ["snapshot", "targets", "targets/releases"])
def test_forged_expired_roles_are_refused(gate: Proxy, sandbox: Sandbox, front: FaultServer, role: str) -> None:
    forged, gun = forged_repo(sandbox, front, "library/demo")
    forged.expires = {k: stamp(3650) for k in forged.expires}
    forged.expires[role] = stamp(-400)  # before the real now, whatever NOW the factory assumes
    serve_forged(front, gun, forged.files())
    response = pull(gate, "library/demo")
    assert check_of(response) == (role, "expired")


def test_forged_snapshot_rollback_under_a_fresh_timestamp_is_refused(gate: Proxy, sandbox: Sandbox,
                                                                     front: FaultServer) -> None:
    forged, gun = forged_repo(sandbox, front, "library/demo")
    forged.expires = {k: stamp(3650) for k in forged.expires}
    first = forged.files()
    serve_forged(front, gun, first)
    assert pull(gate, "library/demo").status_code == 200
    forged.versions["snapshot"] -= 1
    forged.versions["timestamp"] += 1
    serve_forged(front, gun, forged.files(root=first["root"]))
    assert check_of(pull(gate, "library/demo")) == ("snapshot", "rollback")


def test_forged_below_threshold_is_refused(gate: Proxy, sandbox: Sandbox, front: FaultServer) -> None:
    forged, gun = forged_repo(sandbox, front, "library/demo")
    forged.expires = {k: stamp(3650) for k in forged.expires}
    forged.thresholds["targets"] = 2
    serve_forged(front, gun, forged.files())
    assert check_of(pull(gate, "library/demo")) == ("targets", "signature")


def test_forged_delegation_outside_its_paths_is_refused(gate: Proxy, sandbox: Sandbox, front: FaultServer) -> None:
    forged, gun = forged_repo(sandbox, front, "library/demo")
    forged.expires = {k: stamp(3650) for k in forged.expires}
    forged.delegations["targets/releases"]["paths"] = ["release-"]
    serve_forged(front, gun, forged.files())
    assert check_of(pull(gate, "library/demo")) == ("targets/releases", "paths")
