"""Real clients pull THROUGH pullgate: skopeo, podman, containerd's ctr and dockerd.

Every reference names the proxy (``<proxy.host>/library/demo:v1``); pullgate
maps it to the GUN ``<registry host>/library/demo`` on the session sandbox's
notary server.  A signed tag must arrive with exactly the digest the trust
data signs (``sandbox.images[...]``), as the client itself reports or stores
it; an unsigned tag or a repository without trust data must be refused with
pullgate's ``remote trust data does not exist`` message wherever the client
shows the registry's error text.

Services are started once per module (containerd, dockerd) and shared; the
images a test pulled are removed afterwards, so each pull really fetches
manifests and blobs through the proxy.  ``library/dsigned:v1`` is seeded into
the session sandbox by this module's dockerd (``seed_dsigned``), straight to
the registry and notary server, never through the proxy.  A missing client fails under CI=true
and skips elsewhere (``tests.realenv.testing``).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.realenv.images import OCI_INDEX
from tests.realenv.procs import clean_env, run
from tests.faults import Fault, FaultServer, flip_last_byte
from tests.realenv.pullgate import Proxy, start_proxy
from tests.realenv.sandbox import Sandbox, SeededImage, seed_dsigned
from tests.realenv.services import Containerd, Dockerd, podman_cmd, start_dockerd
from tests.realenv.testing import components, needs

REFUSED = "remote trust data does not exist"
"""The start of every "not signed" message pullgate sends (the notary client's wording)."""

PLATFORM_ARCH = "amd64"
"""Platform picked from demo:multi, pinned so the test does not depend on the host."""

REF_NAME = "org.opencontainers.image.ref.name"

Tool = tuple[list[str], dict[str, str]]
"""A client's argv prefix and the environment to run it with."""

ContainersConf = tuple[Path, dict[str, str]]
"""(signature policy file, environment) shared by skopeo and podman."""


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def output(result: subprocess.CompletedProcess[str]) -> str:
    """stdout and stderr together (clients print errors on either)."""
    return f"{result.stdout}\n{result.stderr}"


def proxied(proxy: Proxy, image: SeededImage) -> str:
    """The reference of *image* through the proxy: ``127.0.0.1:PORT/library/demo:v1``."""
    return f"{proxy.host}/{image.name}:{image.tag}"


def refusal(sandbox: Sandbox, key: str) -> str:
    """The exact refusal pullgate sends for unsigned seeded image *key* (notary client wording)."""
    image = sandbox.images[key]
    assert not image.signed, f"{key} is signed; no refusal expected"
    gun = sandbox.gun(image.name)
    if key == "notrust:latest":  # the GUN has no trust data at all
        return f"{REFUSED} for {gun}: {sandbox.notary.host} does not have trust data for {gun}"
    return f"{REFUSED} for {gun}:{image.tag}: No valid trust data for {image.tag}"  # trusted GUN, tag unsigned


def platform_child(sandbox: Sandbox, key: str, arch: str = PLATFORM_ARCH) -> str:
    """Digest of the *arch* manifest listed by the seeded index *key* (read from the registry)."""
    image = sandbox.images[key]
    request = urllib.request.Request(f"{sandbox.registry.url}/v2/{image.name}/manifests/{image.digest}",
                                     headers={"Accept": OCI_INDEX})
    with urllib.request.urlopen(request, timeout=10) as response:
        index = json.loads(response.read())
    [digest] = [m["digest"] for m in index["manifests"] if m["platform"]["architecture"] == arch]
    return str(digest)


class ProxyLog:
    """What the proxy logged since a mark: pullgate.log in the proxy's tmp dir."""

    def __init__(self, proxy: Proxy) -> None:
        self.path = proxy.service.log_path
        self.start = self.path.stat().st_size

    def new(self) -> str:
        with open(self.path, "rb") as log:
            log.seek(self.start)
            return log.read().decode(errors="replace")


def assert_blobs_intact(layout: Path) -> None:
    """Every blob in an OCI layout hashes to its file name (the proxy relayed real bytes)."""
    blobs = sorted((layout / "blobs" / "sha256").iterdir())
    assert blobs, f"no blobs in {layout}"
    for blob in blobs:
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, blob


@pytest.fixture(scope="module")
def containers_conf(tmp_path_factory: pytest.TempPathFactory) -> ContainersConf:
    """A private accept-anything policy and an empty registries.conf for skopeo/podman.

    Keeps /etc/containers (search registries, mirrors, signature policy) out
    of the result; returns (policy path, environment).
    """
    directory = tmp_path_factory.mktemp("containers-conf")
    policy = directory / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    registries = directory / "registries.conf"
    registries.write_text("unqualified-search-registries = []\n")
    return policy, clean_env(("CONTAINERS_", "REGISTRY_AUTH_FILE"), CONTAINERS_REGISTRIES_CONF=str(registries))


# ---------------------------------------------------------------------------
# skopeo
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def skopeo(containers_conf: ContainersConf) -> Tool:
    """skopeo argv prefix (private policy) and its environment."""
    policy, env = containers_conf
    return [needs("skopeo")["skopeo"], "--policy", str(policy)], env


def test_skopeo_copy_signed_manifest(skopeo: Tool, proxy: Proxy,
                                     sandbox: Sandbox, tmp_path: Path) -> None:
    argv, env = skopeo
    image = sandbox.images["demo:v1"]
    layout = tmp_path / "layout"
    result = run([*argv, "copy", "--src-tls-verify=false", f"docker://{proxied(proxy, image)}",
                  f"oci:{layout}:v1"], env=env, check=False)
    assert result.returncode == 0, output(result)
    index = json.loads((layout / "index.json").read_text())
    assert [(m["digest"], m["size"], m["annotations"][REF_NAME]) for m in index["manifests"]] == [
        (image.digest, image.length, "v1")]
    assert_blobs_intact(layout)


def copy_all(skopeo: Tool, proxy: Proxy, image: SeededImage, layout: Path) -> None:
    """``skopeo copy --all`` of an image through the proxy into an OCI layout; it must succeed."""
    argv, env = skopeo
    result = run([*argv, "copy", "--all", "--src-tls-verify=false", f"docker://{proxied(proxy, image)}",
                  f"oci:{layout}:{image.tag}"], env=env, check=False)
    assert result.returncode == 0, output(result)


def test_skopeo_copy_all_of_signed_index(skopeo: Tool, proxy: Proxy,
                                         sandbox: Sandbox, tmp_path: Path) -> None:
    image = sandbox.images["demo:multi"]
    layout = tmp_path / "layout"
    copy_all(skopeo, proxy, image, layout)
    index = json.loads((layout / "index.json").read_text())
    assert [(m["digest"], m["mediaType"], m["annotations"][REF_NAME]) for m in index["manifests"]] == [
        (image.digest, image.media_type, "multi")]
    # --all: the index and every platform manifest it lists came through
    copied = json.loads((layout / "blobs" / "sha256" / image.digest.removeprefix("sha256:")).read_bytes())
    for child in copied["manifests"]:
        assert (layout / "blobs" / "sha256" / child["digest"].removeprefix("sha256:")).is_file(), child
    assert len(copied["manifests"]) == 2
    assert_blobs_intact(layout)


@pytest.mark.parametrize("key", ["demo:v1", "tsigned:v1"])
def test_skopeo_inspect_raw_signed(skopeo: Tool, proxy: Proxy,
                                   sandbox: Sandbox, key: str) -> None:
    argv, env = skopeo
    image = sandbox.images[key]
    result = subprocess.run([*argv, "inspect", "--raw", "--tls-verify=false", f"docker://{proxied(proxy, image)}"],
                            env=env, capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert "sha256:" + hashlib.sha256(result.stdout).hexdigest() == image.digest
    assert len(result.stdout) == image.length


@pytest.mark.parametrize("key", ["demo:dev", "notrust:latest"])
def test_skopeo_inspect_unsigned_refused(skopeo: Tool, proxy: Proxy,
                                         sandbox: Sandbox, key: str) -> None:
    argv, env = skopeo
    result = run([*argv, "inspect", "--raw", "--tls-verify=false",
                  f"docker://{proxied(proxy, sandbox.images[key])}"], env=env, check=False)
    assert result.returncode != 0, output(result)
    assert REFUSED in result.stderr
    assert refusal(sandbox, key) in result.stderr


# ---------------------------------------------------------------------------
# podman
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Podman:
    """podman with private storage, policy and registries.conf."""

    argv: list[str]
    env: dict[str, str]
    policy: Path

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([*self.argv, *args], env=self.env, check=check)

    def pull(self, ref: str) -> subprocess.CompletedProcess[str]:
        return self("pull", "--tls-verify=false", "--signature-policy", str(self.policy),
                    "--arch", PLATFORM_ARCH, ref, check=False)

    def inspect(self, ref: str) -> tuple[str, set[str]]:
        """(digest, repo digests) podman stored for *ref*."""
        result = self("image", "inspect", "--format", "{{.Digest}} {{json .RepoDigests}}", ref)
        digest, repo_digests = result.stdout.strip().split(" ", 1)
        return digest, set(json.loads(repo_digests))


@pytest.fixture
def podman(containers_conf: ContainersConf) -> Iterator[Podman]:
    """A storage of its own per test (podman has no daemon: nothing to share or stop).

    The storage lives in a short /tmp dir, removed afterwards: podman refuses
    a runroot longer than 50 characters, which pytest's tmp_path is.
    """
    needs("podman")
    policy, env = containers_conf
    workdir = Path(tempfile.mkdtemp(prefix="pg-podman-", dir="/tmp"))
    try:
        yield Podman(podman_cmd(workdir), env, policy)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_podman_pull_signed_manifest(podman: Podman, proxy: Proxy, sandbox: Sandbox) -> None:
    image = sandbox.images["demo:v1"]
    ref = proxied(proxy, image)
    result = podman.pull(ref)
    assert result.returncode == 0, output(result)
    assert podman.inspect(ref) == (image.digest, {f"{proxy.host}/{image.name}@{image.digest}"})


def test_podman_pull_signed_index(podman: Podman, proxy: Proxy, sandbox: Sandbox) -> None:
    image = sandbox.images["demo:multi"]
    ref = proxied(proxy, image)
    result = podman.pull(ref)
    assert result.returncode == 0, output(result)
    child = platform_child(sandbox, "demo:multi")
    # podman reports the digest it pulled by (the signed index) and stores the
    # chosen platform manifest under its own digest as well
    assert podman.inspect(ref) == (image.digest, {f"{proxy.host}/{image.name}@{image.digest}",
                                                  f"{proxy.host}/{image.name}@{child}"})


@pytest.mark.parametrize("key", ["notrust:latest", "demo:dev"])
def test_podman_pull_unsigned_refused(podman: Podman, proxy: Proxy, sandbox: Sandbox, key: str) -> None:
    result = podman.pull(proxied(proxy, sandbox.images[key]))
    assert result.returncode != 0, output(result)
    assert REFUSED in result.stderr
    assert refusal(sandbox, key) in result.stderr
    assert podman("images", "-q").stdout.strip() == ""


# ---------------------------------------------------------------------------
# containerd (ctr)
# ---------------------------------------------------------------------------


@pytest.fixture
def containerd(containerd_daemon: Containerd) -> Iterator[Containerd]:
    """The module's containerd, emptied of images after the test."""
    yield containerd_daemon
    refs = containerd_daemon.ctr("images", "ls", "-q").stdout.split()
    if refs:
        containerd_daemon.ctr("images", "rm", "--sync", *refs)


def ctr_images(daemon: Containerd) -> dict[str, tuple[str, str]]:
    """``ctr images ls`` as {ref: (media type, digest)}."""
    rows = daemon.ctr("images", "ls").stdout.splitlines()[1:]
    return {ref: (media_type, digest) for ref, media_type, digest, *_ in (row.split() for row in rows if row)}


@pytest.mark.parametrize("key", ["demo:v1", "demo:multi"])
def test_ctr_pull_signed(containerd: Containerd, proxy: Proxy, sandbox: Sandbox, key: str) -> None:
    image = sandbox.images[key]
    ref = proxied(proxy, image)
    result = containerd.ctr("images", "pull", "--plain-http", "--platform", f"linux/{PLATFORM_ARCH}", ref,
                            check=False)
    assert result.returncode == 0, output(result)
    assert ctr_images(containerd) == {ref: (image.media_type, image.digest)}


@pytest.mark.parametrize("key", ["demo:dev", "notrust:latest"])
def test_ctr_pull_unsigned_refused(containerd: Containerd, proxy: Proxy, sandbox: Sandbox, key: str) -> None:
    image = sandbox.images[key]
    log = ProxyLog(proxy)
    result = containerd.ctr("images", "pull", "--plain-http", proxied(proxy, image), check=False)
    assert result.returncode != 0, output(result)
    # containerd resolves a tag with HEAD only, and a HEAD answer has no body, so
    # ctr can only report the status, never pullgate's error message ...
    assert f"[manifests {image.tag}]: 403 Forbidden" in result.stderr
    assert ctr_images(containerd) == {}
    # ... which the proxy did send for exactly that HEAD (and logged)
    assert (f"refused HEAD /v2/{image.name}/manifests/{image.tag}: {refusal(sandbox, key)}"
            in log.new())


# ---------------------------------------------------------------------------
# dockerd (docker pull)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    """A private dockerd on the host network (no netns).

    Without a netns it reaches the loopback proxy and registry directly;
    127.0.0.0/8 registries are plain HTTP by default, and a reference with an
    explicit 127.0.0.1:PORT host never falls back to Docker Hub.
    """
    needs("docker", "dockerd")
    with components():
        daemon = start_dockerd(tmp_path_factory.mktemp("dockerd"))
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def dsigned(sandbox: Sandbox, dockerd: Dockerd) -> SeededImage:
    """library/dsigned:v1, pushed by this dockerd with DOCKER_CONTENT_TRUST=1 to the registry itself."""
    return seed_dsigned(sandbox, dockerd)


@pytest.fixture
def docker(dockerd: Dockerd) -> Iterator[Dockerd]:
    """The module's dockerd, emptied of images after the test (so blobs are fetched every time)."""
    yield dockerd
    dockerd.docker("image", "prune", "--all", "--force")


def docker_pull(daemon: Dockerd, ref: str) -> subprocess.CompletedProcess[str]:
    # the CLI's own content trust stays off: pullgate is what enforces it here
    return daemon.docker("pull", ref, env={"DOCKER_CONTENT_TRUST": "0"}, check=False, timeout=120)


def assert_docker_pulled(daemon: Dockerd, proxy: Proxy, image: SeededImage) -> None:
    ref = proxied(proxy, image)
    result = docker_pull(daemon, ref)
    assert result.returncode == 0, output(result)
    assert re.findall(r"^Digest: (\S+)$", result.stdout, re.M) == [image.digest], result.stdout
    inspected = daemon.docker("image", "inspect", "--format", "{{json .RepoDigests}}", ref)
    assert f"{proxy.host}/{image.name}@{image.digest}" in json.loads(inspected.stdout)


@pytest.mark.parametrize("key", ["demo:v1", "demo:multi", "tsigned:v1"])
def test_docker_pull_signed(docker: Dockerd, proxy: Proxy, sandbox: Sandbox, key: str) -> None:
    assert_docker_pulled(docker, proxy, sandbox.images[key])


def test_docker_pull_docker_push_signed(docker: Dockerd, dsigned: SeededImage, proxy: Proxy,
                                        sandbox: Sandbox) -> None:
    assert dsigned.signed and dsigned.role == "targets"
    found = sandbox.notary_cli.lookup(sandbox.gun(dsigned.name), dsigned.tag)
    assert found.stdout.split() == [dsigned.tag, dsigned.digest, str(dsigned.length)], output(found)
    assert_docker_pulled(docker, proxy, dsigned)


@pytest.mark.parametrize("key", ["demo:dev", "notrust:latest"])
def test_docker_pull_unsigned_refused(docker: Dockerd, proxy: Proxy, sandbox: Sandbox, key: str) -> None:
    ref = proxied(proxy, sandbox.images[key])
    result = docker_pull(docker, ref)
    assert result.returncode != 0, output(result)
    assert REFUSED in result.stderr
    assert refusal(sandbox, key) in result.stderr
    assert docker.docker("image", "inspect", ref, check=False).returncode != 0


# ---------------------------------------------------------------------------
# the missing-tool rule this module relies on
# ---------------------------------------------------------------------------


def test_missing_client_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        needs("pullgate-no-such-client")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):  # outside CI a developer may skip
        needs("pullgate-no-such-client")


# ---------------------------------------------------------------------------
# real clients through a faulty upstream: token auth, blobs behind a CDN redirect, broken streams
# ---------------------------------------------------------------------------


@dataclass
class Faulty:
    """pullgate in front of a token-protected registry front whose blobs 307 to a credential-refusing CDN."""

    proxy: Proxy
    registry: FaultServer
    cdn: FaultServer

    def blob_fault(self, fault: Fault | None) -> None:
        """Put a fault on every blob, or (None) send every blob to the CDN again."""
        self.registry.faults["/blobs/"] = fault or Fault(redirect_to=self.cdn.url)


@pytest.fixture(scope="module")
def faulty(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    registry = FaultServer(sandbox.registry.url, token="registry-token").start()
    cdn = FaultServer(sandbox.registry.url, reject_authorization=True).start()
    running = start_proxy(tmp_path_factory.mktemp("faulty"), registry.url, sandbox.notary.url, sandbox.ca.ca_cert,
                          extra=("--gun-prefix", sandbox.registry.host))
    world = Faulty(running, registry, cdn)
    world.blob_fault(None)
    yield world
    running.stop()
    registry.stop()
    cdn.stop()


def test_skopeo_through_token_auth_and_cdn_redirects(skopeo: Tool, faulty: Faulty, sandbox: Sandbox,
                                                     tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    copy_all(skopeo, faulty.proxy, sandbox.images["demo:multi"], layout)
    assert_blobs_intact(layout)
    assert any("/blobs/" in s.path for s in faulty.cdn.seen), "blobs came from the CDN"
    assert all("authorization" not in s.headers for s in faulty.cdn.seen)


def test_ctr_pull_of_a_flipped_layer_fails_then_succeeds_when_healthy(containerd: Containerd, faulty: Faulty,
                                                                      sandbox: Sandbox) -> None:
    image = sandbox.images["demo:v1"]
    ref = proxied(faulty.proxy, image)
    faulty.blob_fault(Fault(mutate=flip_last_byte))
    try:
        broken = containerd.ctr("images", "pull", "--plain-http", ref, check=False)
    finally:
        faulty.blob_fault(None)
    assert broken.returncode != 0, output(broken)
    healthy = containerd.ctr("images", "pull", "--plain-http", ref, check=False)
    assert healthy.returncode == 0, output(healthy)
    assert ctr_images(containerd)[ref][1] == image.digest


@pytest.mark.parametrize("fault", [Fault(cut_after=20), Fault(status=500, body=b"<html>upstream down</html>",
                                                              headers={"content-type": "text/html"})],
                         ids=["truncated", "html-500"])
def test_docker_pull_of_a_broken_layer_fails_cleanly_then_succeeds(docker: Dockerd, faulty: Faulty,
                                                                   sandbox: Sandbox, fault: Fault) -> None:
    image = sandbox.images["demo:v1"]
    faulty.blob_fault(fault)
    try:
        broken = docker_pull(docker, proxied(faulty.proxy, image))
    finally:
        faulty.blob_fault(None)
    assert broken.returncode != 0
    assert "<html>" not in output(broken)
    assert_docker_pulled(docker, faulty.proxy, image)


def test_docker_pull_through_cdn_redirects_without_docker_content_digest(docker: Dockerd, faulty: Faulty,
                                                                         sandbox: Sandbox) -> None:
    image = sandbox.images["demo:multi"]
    faulty.cdn.faults["/blobs/"] = Fault(headers={"docker-content-digest": ""})
    try:
        assert_docker_pulled(docker, faulty.proxy, image)
    finally:
        faulty.cdn.faults.clear()
