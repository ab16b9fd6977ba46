"""Mirror and gateway use: several upstreams, Docker Hub naming, containerd, podman and dockerd mirrors,
client auth, TLS.

A local registry and notary server stand in for Docker Hub: images are
signed under GUNs `docker.io/<name>`, and the hub upstream maps
`/v2/demo/...` to `library/demo` as the Hub does. dockerd falls back to the
real Hub when a mirror refuses, so its mirror test runs in a network
namespace of its own with only loopback.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.faults import FaultServer
from tests.realenv.procs import free_port, run, start_netns
from tests.realenv.pullgate import Proxy, start_proxy
from tests.realenv.sandbox import Sandbox, seed_sandbox
from tests.realenv.services import Containerd, podman_cmd, start_dockerd
from tests.realenv.signing import DELEGATION_ROLE
from tests.realenv.testing import components, needs

HUB_GUN = "docker.io/library/demo"


def sign_as_hub(sandbox: Sandbox) -> None:
    """Sign demo:v1 and demo:multi under the Hub's GUN, docker-style (delegation, server snapshot)."""
    cli = sandbox.notary_cli
    cli.init(HUB_GUN)
    cli.rotate_snapshot_to_server(HUB_GUN)
    cli.publish(HUB_GUN)
    cli.add_delegation(HUB_GUN, DELEGATION_ROLE)
    for key in ("demo:v1", "demo:multi"):
        image = sandbox.images[key]
        cli.addhash(HUB_GUN, image.tag, image.length, image.digest, [DELEGATION_ROLE])
    cli.publish(HUB_GUN)


def gateway_config(sandbox: Sandbox, path: Path, notary_url: str | None = None, extra: str = "") -> Path:
    """Two upstreams over the one sandbox: a Hub stand-in (default) and a prefixed local registry."""
    notary = notary_url or sandbox.notary.url
    path.write_text(f"""
upstreams:
  - name: hub
    docker_hub: true
    registry: {sandbox.registry.url}
    notary: {notary}
    notary_ca: {sandbox.ca.ca_cert}
  - name: local
    registry: {sandbox.registry.url}
    notary: {sandbox.notary.url}
    notary_ca: {sandbox.ca.ca_cert}
    path_prefix: local
    namespaces: [registry.internal]
{extra}""")
    return path


@pytest.fixture(scope="module")
def hub_signed(sandbox: Sandbox) -> Sandbox:
    sign_as_hub(sandbox)
    return sandbox


@pytest.fixture(scope="module")
def gateway(hub_signed: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    workdir = tmp_path_factory.mktemp("gateway")
    running = start_proxy(workdir, hub_signed.registry.url, hub_signed.notary.url, hub_signed.ca.ca_cert,
                          extra=("--config", str(gateway_config(hub_signed, workdir / "gateway.yaml"))))
    yield running
    running.stop()


def get(proxy: Proxy, path: str, **kwargs: object) -> httpx.Response:
    return httpx.get(proxy.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]


# -- routing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v2/demo/manifests/v1", "/v2/library/demo/manifests/v1",
                                  "/v2/library/demo/manifests/v1?ns=docker.io",
                                  "/v2/library/demo/manifests/v1?ns=registry-1.docker.io",
                                  "/v2/demo/manifests/v1?ns=index.docker.io"])
def test_hub_names_and_aliases(gateway: Proxy, hub_signed: Sandbox, path: str) -> None:
    response = get(gateway, path)
    assert response.status_code == 200, response.text
    assert response.headers["docker-content-digest"] == hub_signed.images["demo:v1"].digest
    assert response.headers["oci-namespace"] == (path.split("ns=")[1] if "ns=" in path else "docker.io")


def test_hub_refusal_names_the_hub_gun(gateway: Proxy) -> None:
    response = get(gateway, "/v2/demo/manifests/dev")
    assert response.status_code == 403
    assert response.json()["errors"][0]["message"] == (
        f"remote trust data does not exist for {HUB_GUN}:dev: No valid trust data for dev")


def test_longer_names_get_no_library_prefix(gateway: Proxy, hub_signed: Sandbox) -> None:
    response = get(gateway, "/v2/someone/demo/manifests/v1")
    assert response.status_code == 403
    assert "for docker.io/someone/demo" in response.json()["errors"][0]["message"]


@pytest.mark.parametrize("path", ["/v2/local/library/demo/manifests/v1",
                                  "/v2/library/demo/manifests/v1?ns=registry.internal"])
def test_prefix_and_namespace_pick_the_other_upstream(gateway: Proxy, hub_signed: Sandbox, path: str) -> None:
    response = get(gateway, path)
    assert response.status_code == 200, response.text
    assert response.headers["docker-content-digest"] == hub_signed.images["demo:v1"].digest
    dev = get(gateway, path.replace("/v1", "/dev"))
    assert f"for {hub_signed.gun('library/demo')}:dev" in dev.json()["errors"][0]["message"]


@pytest.mark.parametrize("ns", ["doc\u212aer.io", "evil.example", "docker.io\r\nX: y"])
def test_namespaces_that_are_not_configured_are_404(gateway: Proxy, ns: str) -> None:
    response = get(gateway, "/v2/library/demo/manifests/v1", params={"ns": ns})
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_namespace_header_is_the_configured_name(gateway: Proxy) -> None:
    response = get(gateway, "/v2/library/demo/manifests/v1?ns=DOCKER.IO")
    assert response.status_code == 200 and response.headers["oci-namespace"] == "docker.io"


def test_per_repository_roles_use_the_name_as_written_for_the_hub(hub_signed: Sandbox, tmp_path: Path) -> None:
    config = gateway_config(hub_signed, tmp_path / "roles.yaml",
                            extra="trust:\n  repositories:\n    demo: {roles: [targets]}\n")
    running = start_proxy(tmp_path, hub_signed.registry.url, hub_signed.notary.url, hub_signed.ca.ca_cert,
                          extra=("--config", str(config)))
    try:
        response = get(running, "/v2/demo/manifests/v1")  # v1 is signed in targets/releases only
    finally:
        running.stop()
    assert response.status_code == 403
    assert "No valid trust data for v1" in response.json()["errors"][0]["message"]


def test_unknown_namespace_is_refused_without_a_connection(hub_signed: Sandbox, tmp_path: Path) -> None:
    notary = FaultServer(hub_signed.notary.url, verify=hub_signed.ca.ssl_context()).start()
    registry = FaultServer(hub_signed.registry.url).start()
    config = gateway_config(hub_signed, tmp_path / "g.yaml", notary.url)
    running = start_proxy(tmp_path, registry.url, notary.url, hub_signed.ca.ca_cert, extra=("--config", str(config)))
    try:
        response = get(running, "/v2/library/demo/manifests/v1?ns=evil.example")
    finally:
        running.stop()
        notary.stop()
        registry.stop()
    assert response.status_code == 404
    error = response.json()["errors"][0]
    assert error["code"] == "NAME_UNKNOWN" and "evil.example" in error["message"]
    assert notary.seen == [] and registry.seen == []


# -- containerd, podman, dockerd as mirrors' clients -------------------------------------------------------


def hosts_dir(base: Path, proxy: Proxy, server: str) -> Path:
    """containerd's certs.d: docker.io served by ``server``, with pullgate as its mirror host."""
    folder = base / "certs.d" / "docker.io"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hosts.toml").write_text(
        f'server = "{server}"\n\n[host."http://{proxy.host}"]\n  capabilities = ["pull", "resolve"]\n')
    return base / "certs.d"


@pytest.mark.parametrize("server", ["proxy", "hub"], ids=["server-is-pullgate", "mirror-host-with-ns"])
def test_containerd_hosts_toml(containerd_daemon: Containerd, gateway: Proxy, hub_signed: Sandbox, tmp_path: Path,
                               server: str) -> None:
    certs = hosts_dir(tmp_path, gateway, f"http://{gateway.host}" if server == "proxy"
                      else "https://registry-1.docker.io")
    image = hub_signed.images["demo:multi"]
    containerd = containerd_daemon
    pulled = containerd.ctr("images", "pull", "--hosts-dir", str(certs), "docker.io/library/demo:multi", check=False)
    try:
        assert pulled.returncode == 0, pulled.stdout + pulled.stderr
        listed = containerd.ctr("images", "ls").stdout
        assert "docker.io/library/demo:multi" in listed and image.digest in listed
    finally:
        containerd.ctr("images", "rm", "--sync", "docker.io/library/demo:multi", check=False)
    if server == "proxy":  # no fallback host: the refusal is final
        refused = containerd.ctr("images", "pull", "--hosts-dir", str(certs), "docker.io/library/demo:dev",
                                 check=False)
        assert refused.returncode != 0 and "403" in refused.stdout + refused.stderr


def test_podman_with_a_registries_conf_mirror(gateway: Proxy, hub_signed: Sandbox) -> None:
    needs("podman")
    workdir = Path(tempfile.mkdtemp(prefix="pg-podmir-", dir="/tmp"))
    try:
        conf = workdir / "registries.conf"
        conf.write_text('unqualified-search-registries = ["docker.io"]\n\n[[registry]]\nprefix = "docker.io"\n'
                        f'location = "docker.io"\n\n[[registry.mirror]]\nlocation = "{gateway.host}"\ninsecure = true\n')
        policy = workdir / "policy.json"
        policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        env = {"CONTAINERS_REGISTRIES_CONF": str(conf), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        base = [*podman_cmd(workdir)]
        result = run([*base, "pull", "--signature-policy", str(policy), "--arch", "amd64", "docker.io/library/demo:v1"],
                     env=env, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        inspected = run([*base, "image", "inspect", "--format", "{{.Digest}}", "docker.io/library/demo:v1"], env=env)
        assert inspected.stdout.strip() == hub_signed.images["demo:v1"].digest
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Island:
    """A network namespace with only loopback: registry, notary, pullgate and a mirror-using dockerd."""

    sandbox: Sandbox
    proxy: Proxy
    docker: object


@pytest.fixture(scope="module")
def island(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Island]:
    needs("dockerd", "docker", "unshare", "nsenter", "ip")
    workdir = tmp_path_factory.mktemp("island")
    with components():
        netns = start_netns(workdir, "island")
    port = free_port()
    try:
        dockerd = start_dockerd(workdir / "dockerd", {"registry-mirrors": [f"http://127.0.0.1:{port}"]}, netns=netns)
        try:
            with seed_sandbox(workdir / "sandbox", dockerd) as world:
                sign_as_hub(world)
                config = gateway_config(world, workdir / "gateway.yaml")
                running = start_proxy(workdir / "pullgate", world.registry.url, world.notary.url, world.ca.ca_cert,
                                      extra=("--config", str(config)), netns=netns, port=port)
                try:
                    yield Island(world, running, dockerd)
                finally:
                    running.stop()
        finally:
            dockerd.stop()
    finally:
        netns.stop()


def test_dockerd_registry_mirror_pulls_a_signed_hub_image(island: Island) -> None:
    docker = island.docker
    image = island.sandbox.images["demo:v1"]
    result = docker.docker("pull", "demo:v1", check=False, timeout=120)  # type: ignore[attr-defined]
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Digest: {image.digest}" in result.stdout
    assert "docker.io/library/demo:v1" in result.stdout


def test_dockerd_registry_mirror_refuses_an_unsigned_hub_tag(island: Island) -> None:
    """The mirror refuses; dockerd then tries the real Hub, which this namespace cannot reach."""
    docker = island.docker
    result = docker.docker("pull", "demo:dev", check=False, timeout=120)  # type: ignore[attr-defined]
    assert result.returncode != 0
    listed = docker.docker("images", "--format", "{{.Repository}}:{{.Tag}}")  # type: ignore[attr-defined]
    assert "demo:dev" not in listed.stdout
    assert "refused GET /v2/library/demo/manifests/dev" in island.proxy.service.log_tail(200) or \
        "refused HEAD /v2/library/demo/manifests/dev" in island.proxy.service.log_tail(200)


# -- client auth and TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked(hub_signed: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """The gateway with basic auth on: user ci, password s3cret."""
    needs("htpasswd")
    workdir = tmp_path_factory.mktemp("locked")
    htpasswd = workdir / "htpasswd"
    subprocess.run(["htpasswd", "-B", "-b", "-c", str(htpasswd), "ci", "s3cret"], check=True, capture_output=True)
    subprocess.run(["htpasswd", "-B", "-b", str(htpasswd), "long", "x" * 80], check=True, capture_output=True)
    config = gateway_config(hub_signed, workdir / "g.yaml", extra=f"auth:\n  htpasswd: {htpasswd}\n")
    running = start_proxy(workdir, hub_signed.registry.url, hub_signed.notary.url, hub_signed.ca.ca_cert,
                          extra=("--config", str(config)))
    yield running
    running.stop()


def test_odd_authorization_headers_are_401(locked: Proxy) -> None:
    import socket

    for header in (b"Basic \xe2\x84\xaa", b"Basic !!!", b"Bearer x", b"Basic " + base64_of(b"no-colon")):
        with socket.create_connection(("127.0.0.1", int(locked.host.rsplit(":", 1)[1])), timeout=10) as conn:
            conn.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: " + header + b"\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 401"), (header, answer[:200])


def base64_of(data: bytes) -> bytes:
    import base64

    return base64.b64encode(data)


def test_basic_auth_challenges_and_accepts(locked: Proxy) -> None:
    bare = get(locked, "/v2/")
    assert bare.status_code == 401
    assert bare.headers["www-authenticate"] == 'Basic realm="pullgate"'
    assert bare.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert get(locked, "/v2/local/library/demo/manifests/v1", auth=("ci", "wrong")).status_code == 401
    assert get(locked, "/v2/local/library/demo/manifests/v1", auth=("ci", "s3cret")).status_code == 200
    assert get(locked, "/v2/", auth=("long", "x" * 80)).status_code == 200  # bcrypt reads 72 bytes, as htpasswd
    assert get(locked, "/v2/", auth=("nobody", "s3cret")).status_code == 401


def test_docker_login_then_pull_a_prefixed_name(locked: Proxy, hub_signed: Sandbox,
                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    needs("dockerd", "docker")
    with components():
        dockerd = start_dockerd(tmp_path_factory.mktemp("dockerd-login"))
    try:
        login = subprocess.run(["docker", "login", locked.host, "-u", "ci", "--password-stdin"], input="s3cret",
                               capture_output=True, text=True, env=dockerd.env(), timeout=60)
        assert login.returncode == 0, login.stdout + login.stderr
        image = hub_signed.images["demo:v1"]
        pulled = dockerd.docker("pull", f"{locked.host}/local/library/demo:v1", check=False, timeout=120)
        assert pulled.returncode == 0, pulled.stdout + pulled.stderr
        assert f"Digest: {image.digest}" in pulled.stdout
        dockerd.docker("logout", locked.host)
        dockerd.docker("image", "prune", "--all", "--force")
        anonymous = dockerd.docker("pull", f"{locked.host}/local/library/demo:v1", check=False, timeout=120)
        assert anonymous.returncode != 0
    finally:
        dockerd.stop()


def test_tls_and_client_certificates(hub_signed: Sandbox, tmp_path: Path) -> None:
    ca = hub_signed.ca
    config = gateway_config(hub_signed, tmp_path / "tls.yaml",
                            extra=f"tls:\n  cert: {ca.server_cert}\n  key: {ca.server_key}\n  client_ca: {ca.ca_cert}\n")
    port = free_port()
    running = start_proxy(tmp_path, hub_signed.registry.url, hub_signed.notary.url, ca.ca_cert,
                          extra=("--config", str(config)), port=port, scheme="https")
    try:
        anonymous = ssl.create_default_context(cafile=str(ca.ca_cert))
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"https://127.0.0.1:{port}/v2/", verify=anonymous)
        with_cert = ssl.create_default_context(cafile=str(ca.ca_cert))
        with_cert.load_cert_chain(str(ca.server_cert), str(ca.server_key))
        response = httpx.get(f"https://127.0.0.1:{port}/v2/local/library/demo/manifests/v1", verify=with_cert)
        assert response.status_code == 200
    finally:
        running.stop()


# -- upstream behind token auth, IPv6 ---------------------------------------------------------------------


def test_upstream_behind_distribution_token_auth(hub_signed: Sandbox, tmp_path: Path) -> None:
    """A real docker-registry with ``auth.token`` over the sandbox's storage; pullgate logs in for its clients."""
    from tests.realenv.services import start_registry
    from tests.token_server import TokenServer

    tokens = TokenServer(tmp_path, "puller", "pull-pass").start()
    storage = hub_signed.registry.service.argv[-1]
    data = Path(storage).parent / "data"
    locked_registry = start_registry(tmp_path / "locked-registry", token_auth=tokens.registry_settings(),
                                     storage=data)
    config = tmp_path / "token.yaml"
    config.write_text("upstream:\n  auth: {username: puller, password: pull-pass}\n")
    running = start_proxy(tmp_path / "pullgate", locked_registry.url, hub_signed.notary.url, hub_signed.ca.ca_cert,
                          extra=("--config", str(config), "--gun-prefix", hub_signed.registry.host))
    try:
        assert httpx.get(f"{locked_registry.url}/v2/library/demo/manifests/v1").status_code == 401
        image = hub_signed.images["demo:v1"]
        response = get(running, "/v2/library/demo/manifests/v1", auth=("client", "never-forwarded"))
        assert response.status_code == 200, response.text
        assert response.headers["docker-content-digest"] == image.digest
        layer = response.json()["layers"][0]
        blob = get(running, f"/v2/library/demo/blobs/{layer['digest']}")
        assert blob.status_code == 200 and len(blob.content) == layer["size"]
        assert "repository:library/demo:pull" in tokens.issued
    finally:
        running.stop()
        locked_registry.stop()
        tokens.stop()


def test_upstream_registry_over_tls_with_its_own_ca(hub_signed: Sandbox, tmp_path: Path) -> None:
    """docker-registry over https: manifests and blob bodies (each through its own client) verify its CA."""
    from tests.realenv.services import start_registry

    data = Path(hub_signed.registry.service.argv[-1]).parent / "data"
    tls_registry = start_registry(tmp_path / "tls-registry", storage=data, tls=hub_signed.ca)
    trusting = tmp_path / "trusting.yaml"
    trusting.write_text(f"upstream:\n  registry_ca: {hub_signed.ca.ca_cert}\n")
    running = start_proxy(tmp_path / "trusting", tls_registry.url, hub_signed.notary.url, hub_signed.ca.ca_cert,
                          extra=("--config", str(trusting), "--gun-prefix", hub_signed.registry.host))
    untrusting = tmp_path / "untrusting.yaml"
    untrusting.write_text("trust:\n  blobs: open\n")
    stranger = start_proxy(tmp_path / "untrusting", tls_registry.url, hub_signed.notary.url, hub_signed.ca.ca_cert,
                           extra=("--config", str(untrusting), "--gun-prefix", hub_signed.registry.host))
    try:
        assert tls_registry.url.startswith("https://")
        response = get(running, "/v2/library/demo/manifests/v1")
        assert response.status_code == 200, response.text
        layer = response.json()["layers"][0]
        blob = get(running, f"/v2/library/demo/blobs/{layer['digest']}")
        assert blob.status_code == 200
        assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == layer["digest"]
        refused = get(stranger, f"/v2/library/demo/blobs/{layer['digest']}")
    finally:
        running.stop()
        stranger.stop()
        tls_registry.stop()
    assert refused.status_code == 503
    assert "CERTIFICATE_VERIFY_FAILED" in refused.json()["errors"][0]["message"]


def test_ipv6_listen_address_and_upstream(hub_signed: Sandbox, tmp_path: Path) -> None:
    front = FaultServer(hub_signed.registry.url, host="::1").start()
    running = start_proxy(tmp_path, front.url, hub_signed.notary.url, hub_signed.ca.ca_cert,
                          extra=("--gun-prefix", hub_signed.registry.host), address="::1")
    try:
        assert running.url.startswith("http://[::1]:")
        response = httpx.get(f"{running.url}/v2/library/demo/manifests/v1", timeout=30)
        blob = httpx.get(f"{running.url}/v2/library/demo/blobs/{response.json()['layers'][0]['digest']}", timeout=30)
    finally:
        running.stop()
        front.stop()
    assert response.status_code == 200, response.text
    assert response.headers["docker-content-digest"] == hub_signed.images["demo:v1"].digest
    assert front.seen and front.seen[-1].headers["host"] == [f"[::1]:{front.port}"]
    layer = response.json()["layers"][0]
    assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == layer["digest"]
    assert front.seen[-1].path == f"/v2/library/demo/blobs/{layer['digest']}"
