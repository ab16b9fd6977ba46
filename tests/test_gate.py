"""The gate end to end: pullgate as a process, in front of the real registry and notary server.

Faults are injected by fronts (tests/faults.py) placed between pullgate and
the real servers; the real servers hold the real signed data.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.app import blob_length
from proxy.errors import RegistryError
from tests.faults import Fault, FaultServer, flip_last_byte
from tests.realenv.images import upload_blob
from tests.realenv.procs import free_port
from tests.realenv.pullgate import REPO_ROOT, Proxy, start_proxy
from tests.realenv.sandbox import Sandbox

MANIFEST_TYPES = {
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
}


@pytest.fixture
def fronts(sandbox: Sandbox) -> Iterator[tuple[FaultServer, FaultServer]]:
    registry = FaultServer(sandbox.registry.url).start()
    notary = FaultServer(sandbox.notary.url, verify=sandbox.ca.ssl_context()).start()
    yield registry, notary
    registry.stop()
    notary.stop()


@pytest.fixture
def gated(sandbox: Sandbox, fronts: tuple[FaultServer, FaultServer], tmp_path: Path) -> Iterator[Proxy]:
    """pullgate whose registry and trust server are the fault fronts (no caching between checks)."""
    registry, notary = fronts
    running = start_proxy(tmp_path, registry.url, notary.url, sandbox.ca.ca_cert,
                          extra=("--gun-prefix", sandbox.registry.host, "--refresh-interval", "0"))
    yield running
    running.stop()


def get(proxy: Proxy, path: str, method: str = "GET", **kwargs: object) -> httpx.Response:
    return httpx.request(method, proxy.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]


def error_of(response: httpx.Response) -> dict:
    assert response.headers["content-type"] == "application/json"
    errors = response.json()["errors"]
    assert len(errors) == 1 and set(errors[0]) == {"code", "message", "detail"}
    return errors[0]


def registry_manifest(sandbox: Sandbox, name: str, reference: str) -> httpx.Response:
    return httpx.get(f"{sandbox.registry.url}/v2/{name}/manifests/{reference}",
                     headers={"Accept": ", ".join(MANIFEST_TYPES)})


def layer_of(sandbox: Sandbox, key: str) -> tuple[str, int]:
    image = sandbox.images[key]
    layer = registry_manifest(sandbox, image.name, image.digest).json()["layers"][0]
    return layer["digest"], layer["size"]


# -- the verdicts ---------------------------------------------------------------------


def test_base_endpoint(proxy: Proxy) -> None:
    response = get(proxy, "/v2/")
    assert response.status_code == 200
    assert response.json() == {}
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


@pytest.mark.parametrize("key", ["demo:v1", "demo:multi", "tsigned:v1"])
def test_signed_tag_is_served_with_the_registry_s_exact_bytes(proxy: Proxy, sandbox: Sandbox, key: str) -> None:
    image = sandbox.images[key]
    response = get(proxy, f"/v2/{image.name}/manifests/{image.tag}",
                   headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    direct = registry_manifest(sandbox, image.name, image.digest)
    assert response.status_code == 200
    assert response.content == direct.content
    assert response.headers["docker-content-digest"] == image.digest
    assert response.headers["content-length"] == str(image.length)
    assert response.headers["content-type"] == direct.headers["content-type"] == image.media_type
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


def test_head_answers_the_same_headers_without_a_body(proxy: Proxy, sandbox: Sandbox) -> None:
    image = sandbox.images["demo:v1"]
    got = get(proxy, "/v2/library/demo/manifests/v1")
    head = get(proxy, "/v2/library/demo/manifests/v1", method="HEAD")
    assert head.status_code == 200 and head.content == b""
    for name in ("content-type", "content-length", "docker-content-digest"):
        assert head.headers[name] == got.headers[name]
    refused = get(proxy, "/v2/library/demo/manifests/dev", method="HEAD")
    assert refused.status_code == 403 and refused.content == b""
    assert refused.headers["content-type"] == "application/json"
    assert image.signed


def test_unsigned_tag_is_refused_as_docker_did(proxy: Proxy, sandbox: Sandbox) -> None:
    response = get(proxy, "/v2/library/demo/manifests/dev")
    gun = sandbox.gun("library/demo")
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "DENIED"
    assert error["message"] == f"remote trust data does not exist for {gun}:dev: No valid trust data for dev"


def test_repository_without_trust_data_is_refused_as_docker_did(proxy: Proxy, sandbox: Sandbox) -> None:
    response = get(proxy, "/v2/library/notrust/manifests/latest")
    gun = sandbox.gun("library/notrust")
    assert response.status_code == 403
    assert error_of(response)["message"] == (
        f"remote trust data does not exist for {gun}: {sandbox.notary.host} does not have trust data for {gun}"
    )


def test_digest_of_a_signed_tag_and_of_an_index_child_are_served(proxy: Proxy, sandbox: Sandbox) -> None:
    v1, multi = sandbox.images["demo:v1"], sandbox.images["demo:multi"]
    assert get(proxy, f"/v2/library/demo/manifests/{v1.digest}").status_code == 200
    index = get(proxy, f"/v2/library/demo/manifests/{multi.digest}").json()
    for child in index["manifests"]:
        response = get(proxy, f"/v2/library/demo/manifests/{child['digest']}")
        assert response.status_code == 200
        assert response.headers["docker-content-digest"] == child["digest"]
        assert len(response.content) == child["size"]


@pytest.mark.parametrize("key", ["notrust:latest", "demo:dev"])
def test_digest_that_no_signed_tag_leads_to_is_refused(gated: Proxy, sandbox: Sandbox,
                                                        fronts: tuple[FaultServer, FaultServer], key: str) -> None:
    stranger = sandbox.images[key].digest
    response = get(gated, f"/v2/library/demo/manifests/{stranger}")
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "DENIED"
    assert error["message"].startswith(f"manifest {stranger} is not signed for {sandbox.gun('library/demo')}")
    assert not any(stranger in seen.path for seen in fronts[0].seen), "an unsigned digest reached the registry"


def test_manifest_is_fetched_by_digest_with_every_accept_value(gated: Proxy, sandbox: Sandbox,
                                                               fronts: tuple[FaultServer, FaultServer]) -> None:
    image = sandbox.images["demo:v1"]
    client_accept = [("Accept", "application/vnd.docker.distribution.manifest.v1+prettyjws"),
                     ("Accept", "application/json")]
    assert get(gated, "/v2/library/demo/manifests/v1", headers=client_accept).status_code == 200
    fetches = [s for s in fronts[0].seen if "/manifests/" in s.path]
    assert [s.path for s in fetches] == [f"/v2/library/demo/manifests/{image.digest}"]
    sent = {v.strip() for line in fetches[0].headers["accept"] for v in line.split(",")}
    assert sent == MANIFEST_TYPES | {"application/vnd.docker.distribution.manifest.v1+prettyjws", "application/json"}


def test_tags_list_holds_only_signed_tags(proxy: Proxy) -> None:
    response = get(proxy, "/v2/library/demo/tags/list")
    assert response.json() == {"name": "library/demo", "tags": ["multi", "v1"]}
    first = get(proxy, "/v2/library/demo/tags/list?n=1")
    assert first.json()["tags"] == ["multi"]
    assert first.headers["link"] == '</v2/library/demo/tags/list?n=1&last=multi>; rel="next"'
    assert get(proxy, "/v2/library/demo/tags/list?n=1&last=multi").json()["tags"] == ["v1"]


# -- fail closed ---------------------------------------------------------------------


def test_trust_server_that_cannot_be_reached_is_503_not_unsigned(sandbox: Sandbox, tmp_path: Path) -> None:
    dead = f"https://127.0.0.1:{free_port()}"
    running = start_proxy(tmp_path, sandbox.registry.url, dead, sandbox.ca.ca_cert)
    try:
        response = get(running, "/v2/library/demo/manifests/v1")
    finally:
        running.stop()
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "UNAVAILABLE"
    assert error["message"].startswith(f"cannot verify {sandbox.gun('library/demo')}: trust server 127.0.0.1:")
    assert "does not exist" not in error["message"]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_trust_server_5xx_is_503(gated: Proxy, fronts: tuple[FaultServer, FaultServer], status: int) -> None:
    fronts[1].faults["/timestamp.json"] = Fault(status=status, body=b"<html>oops</html>")
    response = get(gated, "/v2/library/demo/manifests/v1")
    assert response.status_code == 503
    assert f"timestamp.json: HTTP {status}" in error_of(response)["message"]


def test_tampered_delegation_is_refused_naming_the_check(gated: Proxy, sandbox: Sandbox,
                                                         fronts: tuple[FaultServer, FaultServer]) -> None:
    # matches both the checksum name and the plain name of the delegation's file
    fronts[1].faults["/targets/releases."] = Fault(mutate=lambda b: b.replace(b'"v1"', b'"v2"'))
    response = get(gated, "/v2/library/demo/manifests/v1")
    assert response.status_code == 403
    error = error_of(response)
    assert error["detail"]["role"] == "targets/releases"
    assert error["detail"]["check"] == "hash"
    assert error["message"].startswith(f"trust data for {sandbox.gun('library/demo')} failed verification")


def test_manifest_bytes_that_differ_from_the_signed_digest_are_refused(
        gated: Proxy, sandbox: Sandbox, fronts: tuple[FaultServer, FaultServer]) -> None:
    image = sandbox.images["demo:v1"]
    fronts[0].faults[f"/manifests/{image.digest}"] = Fault(mutate=lambda b: b.replace(b"amd64", b"arm64")
                                                           if b"amd64" in b else b[:-1] + b" ")
    response = get(gated, "/v2/library/demo/manifests/v1")
    assert response.status_code == 502
    error = error_of(response)
    assert error["code"] == "MANIFEST_INVALID"
    assert image.digest in error["message"]


# -- blobs -------------------------------------------------------------------------


def test_blob_streams_with_digest_and_length(proxy: Proxy, sandbox: Sandbox) -> None:
    digest, size = layer_of(sandbox, "demo:v1")
    response = get(proxy, f"/v2/library/demo/blobs/{digest}")
    assert response.status_code == 200
    assert len(response.content) == size
    assert response.headers["docker-content-digest"] == digest
    head = get(proxy, f"/v2/library/demo/blobs/{digest}", method="HEAD")
    assert head.status_code == 200 and head.headers["content-length"] == str(size) and head.content == b""


@pytest.mark.parametrize("fault", [Fault(mutate=flip_last_byte), Fault(cut_after=10)], ids=["flipped", "cut"])
def test_blob_with_wrong_bytes_aborts_the_connection(gated: Proxy, sandbox: Sandbox,
                                                     fronts: tuple[FaultServer, FaultServer], fault: Fault) -> None:
    digest, size = layer_of(sandbox, "demo:v1")
    fronts[0].faults[f"/blobs/{digest}"] = fault
    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("GET", f"{gated.url}/v2/library/demo/blobs/{digest}", timeout=30) as response:
            assert response.status_code == 200
            for chunk in response.iter_raw():
                received += chunk
    assert len(received) < size
    log = gated.service.log_tail(60)
    assert f"aborted blob {digest}: " in log and "internal error" not in log
    fronts[0].faults.clear()
    assert len(get(gated, f"/v2/library/demo/blobs/{digest}").content) == size


# -- everything else ------------------------------------------------------------------


@pytest.mark.parametrize("method, path, status, code", [
    ("PUT", "/v2/library/demo/manifests/v1", 405, "UNSUPPORTED"),
    ("DELETE", "/v2/library/demo/manifests/v1", 405, "UNSUPPORTED"),
    ("POST", "/v2/library/demo/blobs/uploads/", 405, "UNSUPPORTED"),
    ("PATCH", "/v2/library/demo/blobs/uploads/x", 405, "UNSUPPORTED"),
    ("GET", "/v2/_catalog", 404, "UNSUPPORTED"),
    ("GET", "/v2/Library/Demo/manifests/v1", 400, "NAME_INVALID"),
    ("GET", "/v2/library/demo/manifests/-bad", 400, "MANIFEST_INVALID"),
    ("GET", "/v2/library/demo/manifests/md5:abc", 400, "DIGEST_INVALID"),
    ("GET", "/v2/library/demo/blobs/sha512:" + "a" * 128, 400, "DIGEST_INVALID"),
    ("GET", "/elsewhere", 404, "UNSUPPORTED"),
    ("GET", "/v2/library/demo/manifests/v1%0a", 400, "MANIFEST_INVALID"),
    ("GET", "/v2/library/demo/blobs/sha256:" + "a" * 64 + "%0A", 400, "DIGEST_INVALID"),
    ("GET", "/v2/library/demo/tags/list%0a", 404, "UNSUPPORTED"),
    ("GET", "/v2/library/demo/blobs/uploads/abc", 404, "UNSUPPORTED"),
    ("GET", "/v2%0a", 404, "UNSUPPORTED"),
    ("GET", "/v2/%0a", 404, "UNSUPPORTED"),
    ("GET", "/v2%0a/", 404, "UNSUPPORTED"),
    ("GET", "/v2/library/demo/tags/list%0a/", 404, "UNSUPPORTED"),
    ("POST", "/v2/library/demo/manifests/v1%0a/", 404, "UNSUPPORTED"),
])
def test_everything_else_is_registry_error_json(proxy: Proxy, method: str, path: str, status: int,
                                                code: str) -> None:
    response = get(proxy, path, method=method)
    assert response.status_code == status
    assert error_of(response)["code"] == code
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


def test_a_path_is_named_as_sent_with_its_control_characters_written_out(proxy: Proxy) -> None:
    response = get(proxy, "/v2/library/demo/tags/list%0d%0aX-Injected:%201")
    assert error_of(response)["message"] == "pullgate does not offer /v2/library/demo/tags/list\\x0d\\x0aX-Injected: 1"
    assert "x-injected" not in response.headers


def test_check_command_resolves_like_notary_lookup(sandbox: Sandbox, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "proxy", "check", "--upstream", sandbox.registry.url,
            "--notary", sandbox.notary.url, "--notary-ca", str(sandbox.ca.ca_cert), "--state-dir", str(tmp_path)]
    image = sandbox.images["demo:v1"]
    ok = subprocess.run([*base, "library/demo:v1"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == [f"{sandbox.gun('library/demo')}:v1", image.digest, str(image.length),
                                 "targets/releases"]
    bad = subprocess.run([*base, "library/demo:dev"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert bad.returncode == 1
    assert "No valid trust data for dev" in bad.stderr
    stored = json.loads(next((tmp_path / "trust").glob("*.json")).read_text())
    assert stored["gun"] == sandbox.gun("library/demo") and stored["versions"]["root"] >= 1


# -- blobs: the gate, ranges, lengths, redirects ----------------------------------------------------


def test_blob_of_an_image_nobody_signed_is_refused(proxy: Proxy, sandbox: Sandbox) -> None:
    digest, _ = layer_of(sandbox, "notrust:latest")
    response = get(proxy, f"/v2/library/notrust/blobs/{digest}")
    assert response.status_code == 403
    assert error_of(response)["message"].startswith("remote trust data does not exist for")
    stray = upload_blob(sandbox.registry.url, "library/demo", b"pushed to a signed repository, named by no signed manifest")
    assert httpx.get(f"{sandbox.registry.url}/v2/library/demo/blobs/{stray}").status_code == 200
    response = get(proxy, f"/v2/library/demo/blobs/{stray}")
    assert response.status_code == 403
    assert error_of(response)["message"].startswith(f"blob {stray} is not signed for {sandbox.gun('library/demo')}")


def test_blob_of_a_signed_index_child_is_allowed_by_a_fresh_proxy(sandbox: Sandbox, tmp_path: Path) -> None:
    """A proxy that has seen nothing yet rebuilds what the signed targets reference."""
    multi = sandbox.images["demo:multi"]
    index = registry_manifest(sandbox, "library/demo", multi.digest).json()
    child = next(m for m in index["manifests"] if m["platform"]["architecture"] == "arm64")
    layer = registry_manifest(sandbox, "library/demo", child["digest"]).json()["layers"][0]
    running = start_proxy(tmp_path, sandbox.registry.url, sandbox.notary.url, sandbox.ca.ca_cert)
    try:
        response = get(running, f"/v2/library/demo/blobs/{layer['digest']}")
    finally:
        running.stop()
    assert response.status_code == 200
    assert len(response.content) == layer["size"]


def test_open_blobs_setting_skips_the_reference_check(sandbox: Sandbox, tmp_path: Path) -> None:
    digest, size = layer_of(sandbox, "notrust:latest")
    config = tmp_path / "open.yaml"
    config.write_text("trust:\n  blobs: open\n")
    running = start_proxy(tmp_path, sandbox.registry.url, sandbox.notary.url, sandbox.ca.ca_cert,
                          extra=("--config", str(config)))
    try:
        response = get(running, f"/v2/library/notrust/blobs/{digest}")
    finally:
        running.stop()
    assert response.status_code == 200 and len(response.content) == size


@pytest.mark.parametrize("header, start, end", [("bytes=0-9", 0, 9), ("bytes=10-", 10, None),
                                                 ("bytes=-7", None, None), ("bytes=5-100000", 5, None),
                                                 ("bytes=5-" + "9" * 5000, 5, None), ("bytes=-" + "1" * 5000, 0, None),
                                                 ("bytes=" + "0" * 30 + "3-4", 3, 4)])
def test_range_is_206_with_the_right_bytes(proxy: Proxy, sandbox: Sandbox, header: str, start: int | None,
                                           end: int | None) -> None:
    digest, size = layer_of(sandbox, "demo:v1")
    whole = get(proxy, f"/v2/library/demo/blobs/{digest}").content
    response = get(proxy, f"/v2/library/demo/blobs/{digest}", headers={"Range": header})
    first = size - 7 if start is None else start
    last = size - 1 if end is None else end
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {first}-{last}/{size}"
    assert response.headers["content-length"] == str(last - first + 1)
    assert response.headers["accept-ranges"] == "bytes"
    assert response.content == whole[first:last + 1]


@pytest.mark.parametrize("header", ["bytes=100000-", "bytes=-0", "bytes=" + "9" * 5000 + "-"])
def test_unsatisfiable_range_is_416(proxy: Proxy, sandbox: Sandbox, header: str) -> None:
    digest, size = layer_of(sandbox, "demo:v1")
    response = get(proxy, f"/v2/library/demo/blobs/{digest}", headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{size}"
    assert error_of(response)["detail"]["size"] == size


@pytest.mark.parametrize("header", ["bytes=0-1,4-5", "bytes=9-3", "items=0-1", "bytes=1 0-20", "bytes = 0-1",
                                    "bytes=0x1-2"])
def test_ranges_this_ignores_are_answered_whole(proxy: Proxy, sandbox: Sandbox, header: str) -> None:
    digest, size = layer_of(sandbox, "demo:v1")
    for _ in range(3):  # each answer closes its upstream stream: none is left holding a connection
        response = get(proxy, f"/v2/library/demo/blobs/{digest}", headers={"Range": header})
        assert response.status_code == 200 and len(response.content) == size


@pytest.mark.parametrize("if_range, partial", [(None, True), ("{etag}", True),
                                                ('"sha256:{other}"', False), ("W/{etag}", False),
                                                ("Thu, 03 Dec 2026 12:00:00 GMT", False)])
def test_if_range_keeps_the_range_only_for_this_blob_s_etag(proxy: Proxy, sandbox: Sandbox, if_range: str | None,
                                                            partial: bool) -> None:
    digest, size = layer_of(sandbox, "demo:v1")
    headers = {"Range": "bytes=0-4"}
    if if_range is not None:
        headers["If-Range"] = if_range.format(etag=f'"{digest}"', other="0" * 64)
    response = get(proxy, f"/v2/library/demo/blobs/{digest}", headers=headers)
    assert response.headers["etag"] == f'"{digest}"'
    assert (response.status_code, len(response.content)) == ((206, 5) if partial else (200, size))


def test_range_unit_is_case_insensitive(proxy: Proxy, sandbox: Sandbox) -> None:
    digest, size = layer_of(sandbox, "demo:v1")
    response = get(proxy, f"/v2/library/demo/blobs/{digest}", headers={"Range": "BYTES=0-1"})
    assert response.status_code == 206 and response.headers["content-range"] == f"bytes 0-1/{size}"


def test_range_of_a_tampered_blob_is_aborted(gated: Proxy, sandbox: Sandbox,
                                             fronts: tuple[FaultServer, FaultServer]) -> None:
    digest, _ = layer_of(sandbox, "demo:v1")
    fronts[0].faults[f"/blobs/{digest}"] = Fault(mutate=flip_last_byte)
    with pytest.raises(httpx.RemoteProtocolError):
        get(gated, f"/v2/library/demo/blobs/{digest}", headers={"Range": "bytes=0-9"})


@pytest.mark.parametrize("announced, signed, length", [
    ("5", frozenset({5}), 5), ("5", frozenset({5, 7}), 5), (None, frozenset({5}), 5), ("5", None, 5),
    ("4", frozenset({5, 7}), "announces 4 bytes for blob sha256:x; the signed manifests say 5 or 7"),
    (None, frozenset({5, 7}), "sent blob sha256:x without a length"),
])
def test_blob_length_is_one_the_signed_manifests_give(announced: str | None, signed: frozenset[int] | None,
                                                      length: int | str) -> None:
    upstream = httpx.Response(200, headers={"content-length": announced} if announced else {})
    if isinstance(length, int):
        assert blob_length(upstream, "sha256:x", signed, "r") == length
    else:
        with pytest.raises(RegistryError) as refused:
            blob_length(upstream, "sha256:x", signed, "r")
        assert (refused.value.status, refused.value.message) == (502, f"upstream registry r {length}")


def test_blob_whose_upstream_length_differs_from_the_signed_size_is_refused(
        gated: Proxy, sandbox: Sandbox, fronts: tuple[FaultServer, FaultServer]) -> None:
    digest, size = layer_of(sandbox, "demo:v1")
    fronts[0].faults[f"/blobs/{digest}"] = Fault(mutate=lambda b: b + b"extra")
    response = get(gated, f"/v2/library/demo/blobs/{digest}")
    assert response.status_code == 502
    assert f"the signed manifest says {size}" in error_of(response)["message"]


def test_redirect_loop_is_a_clean_503(gated: Proxy, sandbox: Sandbox,
                                      fronts: tuple[FaultServer, FaultServer]) -> None:
    digest, _ = layer_of(sandbox, "demo:v1")
    fronts[0].faults[f"/blobs/{digest}"] = Fault(redirect_to=fronts[0].url)
    response = get(gated, f"/v2/library/demo/blobs/{digest}")
    assert response.status_code == 503
    assert "redirected more than 5 times" in error_of(response)["message"]


def test_html_error_page_from_upstream_becomes_error_json(gated: Proxy, sandbox: Sandbox,
                                                          fronts: tuple[FaultServer, FaultServer]) -> None:
    image = sandbox.images["demo:v1"]
    fronts[0].faults[f"/manifests/{image.digest}"] = Fault(status=502, body=b"<html>Bad gateway</html>",
                                                           headers={"content-type": "text/html"})
    response = get(gated, "/v2/library/demo/manifests/v1")
    assert response.status_code == 503
    assert "answered HTTP 502" in error_of(response)["message"]
    assert "<html>" not in response.text


def test_blob_head_matches_get(proxy: Proxy, sandbox: Sandbox) -> None:
    digest, _ = layer_of(sandbox, "demo:v1")
    got = get(proxy, f"/v2/library/demo/blobs/{digest}")
    head = get(proxy, f"/v2/library/demo/blobs/{digest}", method="HEAD")
    assert head.status_code == got.status_code == 200
    for name in ("content-length", "docker-content-digest", "accept-ranges", "content-type"):
        assert head.headers[name] == got.headers[name]
    refused = get(proxy, f"/v2/library/notrust/blobs/{digest}", method="HEAD")
    assert refused.status_code == 403 and refused.content == b""


def test_warm_signed_pull_makes_no_upstream_round_trip(gated: Proxy, sandbox: Sandbox,
                                                       fronts: tuple[FaultServer, FaultServer]) -> None:
    """With a long refresh interval, a second pull of a tag is answered from memory."""
    assert get(gated, "/v2/library/demo/manifests/v1").status_code == 200
    before = len(fronts[0].seen)
    assert get(gated, "/v2/library/demo/manifests/v1").status_code == 200
    manifest_fetches = [s for s in fronts[0].seen[before:] if "/manifests/" in s.path]
    assert manifest_fetches == []
