"""Bad input and misbehaving servers, each from a bug found by trying to break pullgate."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from proxy.trust.store import StateError, StoredTrust, TrustStore
from proxy.upstream import MANIFEST_MEDIA_TYPES, merged_accept
from tests.faults import Fault, FaultServer, RawServer
from tests.realenv.pullgate import REPO_ROOT, Proxy, start_proxy
from tests.realenv.sandbox import Sandbox
from tests.test_config import pullgate
from tests.realenv.images import upload_blob


def fronted(sandbox: Sandbox, tmp_path: Path, registry: FaultServer | None = None,
            notary: FaultServer | None = None, *extra: str) -> Proxy:
    return start_proxy(tmp_path, registry.url if registry else sandbox.registry.url,
                       notary.url if notary else sandbox.notary.url, sandbox.ca.ca_cert,
                       extra=("--gun-prefix", sandbox.registry.host, "--refresh-interval", "0", *extra))


@pytest.fixture
def registry_front(sandbox: Sandbox) -> Iterator[FaultServer]:
    server = FaultServer(sandbox.registry.url).start()
    yield server
    server.stop()


# -- the token realm is not a trust server ---------------------------------------------------


@pytest.mark.parametrize("answer", [(404, b"not here"), (200, b'{"error": "no"}'),
                                    (200, b'{"signed": {"_type": "Root"}, "signatures": []}')],
                         ids=["404", "no-token", "trust-file"])
def test_failed_token_request_is_503_and_never_read_as_trust_data(sandbox: Sandbox, tmp_path: Path,
                                                                   answer: tuple[int, bytes]) -> None:
    notary = FaultServer(sandbox.notary.url, verify=sandbox.ca.ssl_context(), token="t", token_answer=answer).start()
    proxy = fronted(sandbox, tmp_path, notary=notary)
    try:
        response = httpx.get(f"{proxy.url}/v2/library/demo/manifests/v1")
    finally:
        proxy.stop()
        notary.stop()
    assert response.status_code == 503
    error = response.json()["errors"][0]
    assert error["code"] == "UNAVAILABLE"
    assert "authentication failed: token realm" in error["message"]
    assert "does not exist" not in error["message"]
    assert not list((proxy.state_dir / "trust").glob("*.json")), "nothing may be trusted from a token answer"


def test_plain_http_realm_of_an_https_server_is_refused() -> None:
    import asyncio

    from proxy.auth import AuthFailed, ChallengeAuth, Credentials

    auth = ChallengeAuth(Credentials("u", "p"))
    flow = auth.async_auth_flow(httpx.Request("GET", "https://notary.example/v2/g/_trust/tuf/root.json"))

    async def walk() -> None:
        await flow.__anext__()
        challenge = httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="http://evil.example/token"'})
        await flow.asend(challenge)

    with pytest.raises(AuthFailed, match="plain-http token realm"):
        asyncio.run(walk())


# -- what clients send ---------------------------------------------------------------------


def test_accept_keeps_well_formed_types_and_is_bounded() -> None:
    junk = ", ".join(f"application/x-{i}+json" for i in range(1000))
    merged = merged_accept(["application/json", "not a type", "a/b;q=0.5", junk, "*/*", "\x00/\x00"]).split(", ")
    assert merged[:4] == list(MANIFEST_MEDIA_TYPES)
    assert merged[4:7] == ["application/json", "a/b;q=0.5", "application/x-0+json"]
    assert len(merged) == 4 + 32
    assert "not a type" not in merged


@pytest.mark.parametrize("n", ["abc", "-1", "%C2%B2", "9" * 5000, "100001"])
def test_bad_page_size_is_400(proxy: Proxy, n: str) -> None:
    response = httpx.get(f"{proxy.url}/v2/library/demo/tags/list?n={n}")
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"


def test_405_says_what_is_allowed(proxy: Proxy) -> None:
    response = httpx.put(f"{proxy.url}/v2/library/demo/manifests/v1")
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"


def test_v2_without_slash_is_the_base_endpoint(proxy: Proxy) -> None:
    response = httpx.get(f"{proxy.url}/v2")
    assert response.status_code == 200 and response.json() == {}


@pytest.mark.parametrize("digest, says", [
    ("sha256:abc", "takes 64 lowercase hex digits, got 3"),
    ("sha256:" + "A" * 64, "takes 64 lowercase hex digits"),
    ("sha512:" + "a" * 128, "unsupported digest algorithm 'sha512'"),
])
def test_digest_errors_say_what_is_wrong(proxy: Proxy, digest: str, says: str) -> None:
    response = httpx.get(f"{proxy.url}/v2/library/demo/manifests/{digest}")
    assert response.status_code == 400
    assert says in response.json()["errors"][0]["message"]


# -- misbehaving registry ---------------------------------------------------------------------


def test_one_unreadable_signed_manifest_does_not_hide_the_others(sandbox: Sandbox, tmp_path: Path,
                                                                 registry_front: FaultServer) -> None:
    v1, multi = sandbox.images["demo:v1"], sandbox.images["demo:multi"]
    registry_front.faults[f"/manifests/{v1.digest}"] = Fault(status=404, body=b"gone")
    proxy = fronted(sandbox, tmp_path, registry=registry_front)
    try:
        index = httpx.get(f"{sandbox.registry.url}/v2/library/demo/manifests/{multi.digest}",
                          headers={"Accept": multi.media_type}).json()
        arm64 = next(m["digest"] for m in index["manifests"] if m["platform"]["architecture"] == "arm64")
        response = httpx.get(f"{proxy.url}/v2/library/demo/manifests/{arm64}")
        assert response.status_code == 200
        assert response.headers["docker-content-digest"] == arm64
        assert "signed manifest " + v1.digest in proxy.service.log_tail()
    finally:
        proxy.stop()


@pytest.mark.parametrize("content_type", ["text/html", ""])
def test_manifest_content_type_never_comes_from_a_bad_upstream_header(sandbox: Sandbox, tmp_path: Path,
                                                                     registry_front: FaultServer,
                                                                     content_type: str) -> None:
    v1 = sandbox.images["demo:v1"]
    registry_front.faults[f"/manifests/{v1.digest}"] = Fault(headers={"content-type": content_type})
    proxy = fronted(sandbox, tmp_path, registry=registry_front)
    try:
        response = httpx.get(f"{proxy.url}/v2/library/demo/manifests/v1")
    finally:
        proxy.stop()
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.oci.image.manifest.v1+json"


def test_gzip_encoded_upstream_answer_is_a_clean_error(sandbox: Sandbox, tmp_path: Path,
                                                      registry_front: FaultServer) -> None:
    import gzip

    v1 = sandbox.images["demo:v1"]
    registry_front.faults[f"/manifests/{v1.digest}"] = Fault(mutate=gzip.compress,
                                                             headers={"content-encoding": "gzip"})
    proxy = fronted(sandbox, tmp_path, registry=registry_front)
    try:
        response = httpx.get(f"{proxy.url}/v2/library/demo/manifests/v1")
        log = proxy.service.log_tail()
    finally:
        proxy.stop()
    assert response.status_code == 502
    assert "gzip-encoded" in response.json()["errors"][0]["message"]
    assert "failed GET /v2/library/demo/manifests/v1" in log, "upstream trouble is logged for operators"


def test_client_that_goes_away_stops_the_upstream_download(sandbox: Sandbox, tmp_path: Path,
                                                           registry_front: FaultServer) -> None:
    blob = os.urandom(8 << 20)
    digest = upload_blob(sandbox.registry.url, "library/bigblob", blob)
    path = f"/v2/library/bigblob/blobs/{digest}"
    registry_front.faults[path] = Fault(drip=(64 << 10, 0.05))
    config = tmp_path / "open.yaml"
    config.write_text("trust:\n  repositories:\n    library/bigblob: {blobs: open}\n")
    small = upload_blob(sandbox.registry.url, "library/bigblob", os.urandom(100_000))
    proxy = fronted(sandbox, tmp_path, registry_front, None, "--config", str(config))
    try:
        assert len(httpx.get(f"{proxy.url}/v2/library/bigblob/blobs/{small}").content) == 100_000
        time.sleep(0.5)
        assert "client went away" not in proxy.service.log_tail(), "a whole download is no departure"
        with httpx.stream("GET", proxy.url + path) as response:
            assert response.status_code == 200
            next(response.iter_raw())
        time.sleep(2)
        sent_then = registry_front.sent[path]
        time.sleep(1)
        assert registry_front.sent[path] == sent_then, "the upstream download goes on without a reader"
        assert sent_then < len(blob) // 2
        assert "client went away; upstream download stopped" in proxy.service.log_tail()
    finally:
        proxy.stop()


# -- state ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b'{"root": "x", "root_version": 1e999, "versions": {}}',
                                     b"[" * 100_000])
def test_corrupt_state_file_is_a_state_error(tmp_path: Path, content: bytes) -> None:
    store = TrustStore(tmp_path)
    store.directory.mkdir(parents=True)
    store.path("g/x").write_bytes(content)
    with pytest.raises(StateError):
        store.load("g/x")


def test_gun_too_long_for_a_file_name_is_stored_by_its_hash(tmp_path: Path) -> None:
    gun = "127.0.0.1:5000/" + "/".join(["segment"] * 60)
    store = TrustStore(tmp_path)
    store.save(gun, StoredTrust(root=b"{}", root_version=1, versions={"root": 1}))
    assert store.load(gun) == StoredTrust(root=b"{}", root_version=1, versions={"root": 1})
    assert store.path(gun).name.startswith("sha256-")


def test_state_removed_is_refused_by_every_process_sharing_the_dir_until_its_lock_goes(tmp_path: Path) -> None:
    state = StoredTrust(root=b"{}", root_version=1, versions={"root": 1})
    writer, other = TrustStore(tmp_path), TrustStore(tmp_path)  # as two workers: only one wrote, none read
    writer.save("g/x", state)
    writer.path("g/x").unlink()
    for store in (writer, other):
        with pytest.raises(StateError) as vanished:
            store.load("g/x")
        restart = " and restart pullgate" if store is writer else ""
        assert str(vanished.value) == (
            f"trusted state {tmp_path}/trust/g%2Fx.json has vanished; restore it, or, to trust this GUN anew, "
            f"remove g%2Fx.json and g%2Fx.lock from {tmp_path}/trust{restart}")
    (tmp_path / "trust" / "g%2Fx.lock").unlink()
    assert other.load("g/x") is None, "following the advice, a process that never read it trusts anew"
    with pytest.raises(StateError, match="has vanished with its lock file; restore it, or restart pullgate"):
        writer.load("g/x")


def test_a_state_being_written_first_is_waited_for_not_taken_as_vanished(tmp_path: Path) -> None:
    state = StoredTrust(root=b"{}", root_version=1, versions={"root": 1})
    writer, reader = TrustStore(tmp_path), TrustStore(tmp_path)
    writer.directory.mkdir(parents=True)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with writer._locked("g/x"):  # the lock file exists, the state file not yet
            loading = pool.submit(reader.load, "g/x")
            time.sleep(0.2)
            assert not loading.done(), "the reader waits for the writer"
            writer.path("g/x").write_text(json.dumps({"root": "{}", "root_version": 1, "versions": {"root": 1}}))
        assert loading.result(5) == state


def test_unwritable_state_dir_is_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "trust"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(StateError, match="cannot write trusted state"):
        TrustStore(tmp_path).save("g/x", StoredTrust(root=b"{}", root_version=1, versions={}))


def test_corrupt_state_answers_503_naming_the_file(sandbox: Sandbox, tmp_path: Path) -> None:
    proxy = start_proxy(tmp_path, sandbox.registry.url, sandbox.notary.url, sandbox.ca.ca_cert)
    try:
        store = TrustStore(proxy.state_dir)
        store.directory.mkdir(parents=True, exist_ok=True)
        store.path(sandbox.gun("library/demo")).write_bytes(b"\xff\xfe")
        response = httpx.get(f"{proxy.url}/v2/library/demo/manifests/v1")
    finally:
        proxy.stop()
    assert response.status_code == 503
    assert response.json()["errors"][0]["message"].endswith(
        f"; to trust this GUN anew, remove {store.path(sandbox.gun('library/demo')).name} and "
        f"{store.path(sandbox.gun('library/demo')).stem}.lock from {store.directory}")


@pytest.mark.parametrize("change", [
    lambda state: {**state, "root": state["root"].replace('"expires"', '"expires "')},
    lambda state: {**state, "versions": {**state["versions"], "root": 99}},
], ids=["tampered-root", "raised-version"])
def test_a_stored_root_that_fails_its_checks_is_a_state_error(sandbox: Sandbox, tmp_path: Path,
                                                              change: Callable[[dict], dict]) -> None:
    proxy = start_proxy(tmp_path, sandbox.registry.url, sandbox.notary.url, sandbox.ca.ca_cert)
    try:
        assert httpx.get(f"{proxy.url}/v2/library/demo/manifests/v1").status_code == 200
    finally:
        proxy.stop()
    path = TrustStore(proxy.state_dir).path(sandbox.gun("library/demo"))
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    proxy = start_proxy(tmp_path, sandbox.registry.url, sandbox.notary.url, sandbox.ca.ca_cert)
    try:
        response = httpx.get(f"{proxy.url}/v2/library/demo/manifests/v1")
    finally:
        proxy.stop()
    assert response.status_code == 503
    message = response.json()["errors"][0]["message"]
    assert message.startswith(f"trusted state {path} holds a root that fails its own checks (")
    assert message.endswith(f"); to trust this GUN anew, remove {path.name} and {path.stem}.lock from {path.parent} "
                            "and restart pullgate")


def test_check_interrupted_during_a_lookup_says_so_in_one_line(tmp_path: Path) -> None:
    asked = threading.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        asked.set()
        await reader.read()  # never answers

    server = RawServer(silent).start()
    try:
        check = subprocess.Popen(
            [sys.executable, "-m", "proxy", "check", "--upstream", "http://127.0.0.1:1", "--notary",
             f"http://127.0.0.1:{server.port}", "--state-dir", str(tmp_path), "library/demo:v1"],
            stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
        assert asked.wait(20), "the lookup reached the trust server"
        check.send_signal(signal.SIGINT)
        _, stderr = check.communicate(timeout=10)
    finally:
        server.stop()
    assert (check.returncode, stderr) == (130, "pullgate: interrupted\n")


def _peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def test_oversized_trust_files_for_many_names_at_once_share_one_bound(sandbox: Sandbox, tmp_path: Path) -> None:
    """Each cold name's root.json may fill trust.max_metadata_bytes; together they may not.

    A first round of lookups answered 404 takes the proxy's memory to what so many lookups at
    once cost anyway (threads, connections); the second round adds only the files' bytes."""
    bound, lookups = 16 << 20, 16

    async def endless_root(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        try:
            if b"/library/warm" in head:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n{" % (bound + (1 << 20) + 1))
            for _ in range(17):
                writer.write(b" " * (1 << 20))
                await writer.drain()
        except ConnectionError:
            pass

    def at_once(names: str) -> list[httpx.Response]:
        with concurrent.futures.ThreadPoolExecutor(lookups) as pool:
            return list(pool.map(lambda i: httpx.get(f"{proxy.url}/v2/library/{names}{i}/manifests/v1", timeout=30),
                                 range(lookups)))

    server = RawServer(endless_root).start()
    config = tmp_path / "bound.yaml"
    config.write_text(f"trust:\n  max_metadata_bytes: {bound}\n")
    proxy = start_proxy(tmp_path, sandbox.registry.url, f"http://127.0.0.1:{server.port}", sandbox.ca.ca_cert,
                        extra=("--config", str(config)))
    try:
        assert {answer.status_code for answer in at_once("warm")} == {403}  # no trust data
        before = _peak_rss_mib(proxy.service.pid)
        answers = at_once("cold")
        after = _peak_rss_mib(proxy.service.pid)
    finally:
        proxy.stop()
        server.stop()
    for answer in answers:
        message = answer.json()["errors"][0]["message"]
        assert (answer.status_code, message.endswith(f"root.json is longer than its bound of {bound} bytes")) == \
            (403, True) or (answer.status_code, message.endswith(
                f"root.json: trust files on their way in at once would pass {bound} bytes "
                "(trust.max_metadata_bytes); try again")) == (503, True), message
    assert after - before < 2.5 * bound / (1 << 20), f"peak RSS grew {after - before:.0f} MiB"


# -- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, setting", [
    ("listen: \"127.0.0.1:\u00b2\"\n", "listen"),
    ("listen: \"127.0.0.1:\uff10\uff15\uff10\"\n", "listen"),
    ("state_dir: 5\n", "state_dir"),
    ("state_dir: [a]\n", "state_dir"),
    ("trust:\n  max_metadata_bytes: .inf\n", "trust.max_metadata_bytes"),
    ("trust:\n  refresh_interval: .nan\n", "trust.refresh_interval"),
    ("cache:\n  manifest_bytes: .nan\n", "cache.manifest_bytes"),
    ("timeouts:\n  trust: .nan\n", "timeouts.trust"),
    ("upstream:\n  pinning:\n    ca: [a, b]\n", "upstream.pinning.ca"),
    ("upstream:\n  pinning:\n    keys: {g: ['" + "g" * 64 + "']}\n", "upstream.pinning.keys"),
    ("trust:\n  blobs: sometimes\n", "trust.blobs"),
])
def test_bad_file_settings_are_one_line_naming_them(tmp_path: Path, text: str, setting: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    result = pullgate("serve", "--config", str(path), "--upstream", "http://a", "--notary", "http://b")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"pullgate: config error: {setting}: ")


@pytest.mark.parametrize("flags, setting", [
    (["--upstream", "http://[::1"], "upstream.registry"),
    (["--upstream", "http://alice:secret@127.0.0.1:5000"], "upstream.registry"),
    (["--notary-ca", "/etc/hostname"], "upstream.notary_ca"),
    (["--refresh-interval", "nan"], "trust.refresh_interval"),
])
def test_bad_flags_are_one_line_naming_the_setting(flags: list[str], setting: str) -> None:
    base = {"--upstream": "http://a", "--notary": "https://b"}
    for flag, value in zip(flags[::2], flags[1::2]):
        base[flag] = value
    result = pullgate("serve", *[part for pair in base.items() for part in pair])
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"pullgate: config error: {setting}: ")
    assert "secret" not in result.stderr


@pytest.mark.parametrize("content", [b"\xff\xfe\x00\x01binary", "listen: x\n".encode("utf-16")])
def test_binary_config_file_is_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    result = pullgate("serve", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"pullgate: config error: --config: {path} is not UTF-8 text"


def test_config_that_is_not_a_regular_file_is_refused() -> None:
    result = pullgate("serve", "--config", "/dev/zero")
    assert result.returncode == 2
    assert result.stderr.strip() == "pullgate: config error: --config: /dev/zero is not a regular file"


def test_a_state_dir_that_is_a_broken_link_is_named_as_one(tmp_path: Path) -> None:
    (tmp_path / "state").symlink_to(tmp_path / "gone")
    result = pullgate("serve", "--upstream", "http://a", "--notary", "http://b", "--state-dir", str(tmp_path / "state"))
    assert (result.returncode, result.stderr) == (
        2, f"pullgate: config error: state_dir: cannot write in {tmp_path}/state/trust: {tmp_path}/state is a "
        "broken symbolic link\n")


def test_check_with_a_state_dir_it_cannot_use_is_one_line(sandbox: Sandbox, tmp_path: Path) -> None:
    (tmp_path / "trust").write_text("in the way")
    result = pullgate("check", "--upstream", sandbox.registry.url, "--notary", sandbox.notary.url,
                      "--notary-ca", str(sandbox.ca.ca_cert), "--state-dir", str(tmp_path), "library/demo:v1")
    assert (result.returncode, result.stderr) == (
        2, f"pullgate: config error: state_dir: cannot write in {tmp_path}/trust: it is not a directory\n")


def test_tls_pair_that_does_not_match_is_a_config_error(sandbox: Sandbox, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(other)],
                   check=True, capture_output=True)
    config = tmp_path / "tls.yaml"
    config.write_text(f"tls:\n  cert: {sandbox.ca.server_cert}\n  key: {other}\n")
    for workers in ("1", "2"):
        result = pullgate("serve", "--config", str(config), "--upstream", "http://a", "--notary", "http://b",
                          "--workers", workers)
        assert result.returncode == 2
        assert result.stderr.startswith("pullgate: config error: tls: ") and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("line, realm", [("ci:$2y$05$short", "pullgate"), ("ci:{SHA}abc", "pullgate"),
                                         (None, "pull\u95e8"), (None, "a\nb")])
def test_unusable_client_auth_settings_are_config_errors(tmp_path: Path, line: str | None, realm: str) -> None:
    htpasswd = tmp_path / "htpasswd"
    if line is None:
        subprocess.run(["htpasswd", "-B", "-b", "-c", str(htpasswd), "ci", "pw"], check=True, capture_output=True)
    else:
        htpasswd.write_text(line + "\n")
    config = tmp_path / "auth.yaml"
    config.write_text(f"auth:\n  htpasswd: {htpasswd}\n  realm: {json.dumps(realm)}\n")
    result = pullgate("serve", "--config", str(config), "--upstream", "http://a", "--notary", "http://b")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("pullgate: config error: auth.")


# -- clients: bounded request heads ------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_head_proxy(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    workdir = tmp_path_factory.mktemp("quick-head")
    config = workdir / "quick.yaml"
    config.write_text("timeouts:\n  client_head: 1\n")
    running = start_proxy(workdir, sandbox.registry.url, sandbox.notary.url, sandbox.ca.ca_cert,
                          extra=("--config", str(config)))
    yield running
    running.stop()


def _connect(proxy: Proxy, timeout: float, receive_buffer: int | None = None) -> socket.socket:
    """A plain socket to the proxy; a small ``receive_buffer`` makes a reader that stops felt at once."""
    host, port = proxy.url.removeprefix("http://").rsplit(":", 1)
    connection = socket.create_connection((host, int(port)), timeout=timeout)
    if receive_buffer is not None:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    return connection


def _raw(proxy: Proxy, data: bytes, wait: float = 10.0) -> tuple[bytes, float]:
    """Send ``data`` on a fresh connection; all the proxy answers until it closes, and how long that took."""
    started = time.monotonic()
    with _connect(proxy, wait) as connection:
        connection.sendall(data)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received, time.monotonic() - started


def _error_json(answer: bytes) -> tuple[int, dict[str, str], str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)["errors"][0]["message"]


@pytest.mark.parametrize(("head", "complaint"), [
    (b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (70 << 10) + b"\r\n\r\n", "request head larger than 64 KiB"),
    (b"GET /v2/" + b"a" * (70 << 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n", "request head larger than 64 KiB"),
    (b"GET /v2/ HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(300)) + b"\r\n", "more than 256 request headers"),
], ids=["big-header", "long-url", "many-headers"])
def test_oversized_request_heads_are_431(quick_head_proxy: Proxy, head: bytes, complaint: str) -> None:
    answer, _ = _raw(quick_head_proxy, head)
    status, headers, message = _error_json(answer)
    assert (status, headers["content-type"], message) == (431, "application/json", complaint)
    assert headers["docker-distribution-api-version"] == "registry/2.0"
    assert answer.count(b"HTTP/1.1 ") == 1, "one answer only"


def test_a_request_head_near_the_bound_is_served(quick_head_proxy: Proxy) -> None:
    token = "a" * (40 << 10)  # a big bearer token
    response = httpx.get(f"{quick_head_proxy.url}/v2/", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_a_head_sent_too_slowly_is_408_and_a_silent_connection_closed(quick_head_proxy: Proxy) -> None:
    answer, seconds = _raw(quick_head_proxy, b"GET /v2/ HTTP/1.1\r\nHo")
    status, _, message = _error_json(answer)
    assert (status, message) == (408, "no complete request head within 1s")
    assert 0.9 < seconds < 5
    silent, seconds = _raw(quick_head_proxy, b"")
    assert silent == b"" and 0.9 < seconds < 5


# -- blob answers that would pass unchecked or hold a connection ---------------------------------


def _open_blobs(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "open.yaml"
    config.write_text("trust:\n  blobs: open\n" + extra)
    return config


def _serving_a_blob(sandbox: Sandbox, tmp_path: Path, size: int, settings: str,
                    *flags: str) -> tuple[bytes, str, Proxy]:
    """A random blob of ``size`` bytes in the registry, and a proxy with open blobs, ``settings`` and ``flags``."""
    blob = os.urandom(size)
    digest = upload_blob(sandbox.registry.url, "library/bigblob", blob)
    proxy = start_proxy(tmp_path, sandbox.registry.url, sandbox.notary.url, sandbox.ca.ca_cert,
                        extra=("--config", str(_open_blobs(tmp_path, settings)), *flags))
    return blob, digest, proxy


def test_a_blob_announced_empty_under_another_digest_is_refused(sandbox: Sandbox, tmp_path: Path,
                                                                 registry_front: FaultServer) -> None:
    """With no byte to hold back, an empty answer would be complete before any check: refused first."""
    digest = upload_blob(sandbox.registry.url, "library/bigblob", b"not empty")
    path = f"/v2/library/bigblob/blobs/{digest}"
    registry_front.faults[path] = Fault(body=b"")
    proxy = fronted(sandbox, tmp_path, registry_front, None, "--config", str(_open_blobs(tmp_path)))
    try:
        got = httpx.get(proxy.url + path)
        empty = upload_blob(sandbox.registry.url, "library/bigblob", b"")
        really_empty = httpx.get(f"{proxy.url}/v2/library/bigblob/blobs/{empty}")
    finally:
        proxy.stop()
    assert got.status_code == 502
    assert got.json()["errors"][0]["message"] == (
        f"upstream registry 127.0.0.1:{registry_front.port} announces blob {digest} as empty; "
        "empty content has digest sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert (really_empty.status_code, really_empty.content) == (200, b"")


def test_a_blob_answer_head_sent_a_byte_at_a_time_meets_the_upstream_timeout(sandbox: Sandbox, tmp_path: Path) -> None:
    """Each byte comes well within the read timeout; the whole head must come within timeouts.upstream."""
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        try:
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" + b"X" * 1000:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.2)
        except ConnectionError:
            pass

    server = RawServer(trickle).start()
    proxy = start_proxy(tmp_path, f"http://127.0.0.1:{server.port}", sandbox.notary.url, sandbox.ca.ca_cert,
                        extra=("--config", str(_open_blobs(tmp_path, "timeouts:\n  upstream: 2\n"))))
    try:
        started = time.monotonic()
        response = httpx.get(f"{proxy.url}/v2/library/x/blobs/sha256:{'a' * 64}", timeout=30)
        seconds = time.monotonic() - started
    finally:
        proxy.stop()
        server.stop()
    assert response.status_code == 503
    assert response.json()["errors"][0]["message"] == (
        f"upstream registry 127.0.0.1:{server.port} did not answer for blob sha256:{'a' * 64} within 2s")
    assert seconds < 6


def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(sandbox: Sandbox, tmp_path: Path,
                                                                        registry_front: FaultServer) -> None:
    blob = os.urandom(64 << 20)
    digest = upload_blob(sandbox.registry.url, "library/bigblob", blob)
    config = _open_blobs(tmp_path, "timeouts:\n  client_send: 0.2\n")
    proxy = fronted(sandbox, tmp_path, registry_front, None, "--config", str(config))
    path = f"/v2/library/bigblob/blobs/{digest}"
    try:
        with _connect(proxy, 20, 64 << 10) as connection:
            connection.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            received = len(connection.recv(65536))
            time.sleep(4)  # reads nothing meanwhile
            while chunk := connection.recv(1 << 20):
                received += len(chunk)
        log = proxy.service.log_tail()
    finally:
        proxy.stop()
    assert received < len(blob), "the stalled client was cut off, not served in full"
    assert f"aborted blob {digest}: the client took less than 256 KiB per 0.2s" in log


def test_a_slow_but_steady_client_gets_the_whole_blob(sandbox: Sandbox, tmp_path: Path) -> None:
    """The send timeout is allowed per 256 KiB, not per piece of 4 MiB: at about 2 MiB/s, 256 KiB
    take an eighth of the 1 s allowed, a piece two seconds."""
    blob, digest, proxy = _serving_a_blob(sandbox, tmp_path, 9 << 20, "timeouts:\n  client_send: 1\n")
    try:
        with _connect(proxy, 20, 32 << 10) as connection:
            connection.sendall(f"GET /v2/library/bigblob/blobs/{digest} HTTP/1.1\r\nHost: x\r\n"
                               "Connection: close\r\n\r\n".encode())
            received = b""
            while chunk := connection.recv(16 << 10):
                received += chunk
                time.sleep(0.008)  # about 2 MiB/s
    finally:
        proxy.stop()
    assert received.partition(b"\r\n\r\n")[2] == blob


def test_an_unfinished_header_is_431_before_it_grows(quick_head_proxy: Proxy) -> None:
    """The parser holds an unfinished field back from its callbacks: the raw bytes of an open head count."""
    answer, seconds = _raw(quick_head_proxy, b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (300 << 10))
    status, _, message = _error_json(answer)
    assert (status, message) == (431, "request head larger than 64 KiB")
    assert seconds < 0.9, "refused on the bytes, not at the head deadline"


def _keep_sending(proxy: Proxy, first: bytes, then: bytes, every: float, limit: float) -> tuple[bytes, float]:
    """Send ``first``, then ``then`` every ``every`` seconds until the proxy closes (or ``limit``)."""
    started = time.monotonic()
    received = b""
    with _connect(proxy, every) as connection:
        connection.sendall(first)
        while time.monotonic() - started < limit:
            try:
                chunk = connection.recv(65536)
            except TimeoutError:
                try:
                    connection.sendall(then)
                except OSError:
                    break
                continue
            if not chunk:
                break
            received += chunk
    return received, time.monotonic() - started


@pytest.mark.parametrize("first, then", [
    (b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n"),
    (b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n", b"b"),
], ids=["blank-lines", "trickled-body"])
def test_bytes_that_never_make_a_request_do_not_keep_a_connection(quick_head_proxy: Proxy, first: bytes,
                                                                   then: bytes) -> None:
    received, seconds = _keep_sending(quick_head_proxy, first, then, every=0.3, limit=8)
    assert received.startswith(b"HTTP/1.1 200 OK"), "the request itself was answered"
    assert seconds < 4, "the connection was closed a head deadline after the answer"


def test_a_malformed_request_is_error_json(quick_head_proxy: Proxy) -> None:
    answer, _ = _raw(quick_head_proxy, b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                       b"Transfer-Encoding: chunked\r\n\r\n")
    status, headers, message = _error_json(answer)
    assert (status, headers["content-type"], headers["docker-distribution-api-version"]) == (
        400, "application/json", "registry/2.0")
    assert message.startswith("invalid HTTP request")


def test_a_tls_handshake_on_the_plain_port_is_answered_and_logged_as_a_probe(quick_head_proxy: Proxy) -> None:
    tls = ssl.create_default_context()
    hello = ssl.MemoryBIO()
    client = tls.wrap_bio(ssl.MemoryBIO(), hello, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    answer, _ = _raw(quick_head_proxy, hello.read())
    time.sleep(0.3)
    log = quick_head_proxy.service.log_tail(400)
    assert _error_json(answer)[0] == 400
    assert "on this plain-HTTP port with 400" in log
    assert "refused a request" not in log.split("answered a TLS handshake")[-1]


def test_an_upgrade_request_is_answered_as_plain_http(quick_head_proxy: Proxy) -> None:
    response = httpx.get(f"{quick_head_proxy.url}/v2/", headers={
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert (response.status_code, response.json()) == (200, {})


def test_a_pipelined_head_overdue_while_a_blob_streams_never_lands_inside_it(sandbox: Sandbox,
                                                                             tmp_path: Path) -> None:
    # big enough that the kernel's buffers cannot take the whole blob while the client sleeps
    blob, digest, proxy = _serving_a_blob(sandbox, tmp_path, 32 << 20, "timeouts:\n  client_head: 1\n")
    try:
        with _connect(proxy, 20, 64 << 10) as connection:
            connection.sendall(f"GET /v2/library/bigblob/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n"
                               "GET /v2/ HTTP/1.1\r\nHo".encode())
            received = connection.recv(65536)
            time.sleep(2.5)  # the second head's deadline passes while the blob is still on its way
            while chunk := connection.recv(1 << 20):
                received += chunk
    finally:
        proxy.stop()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body[:len(blob)] == blob, "the whole blob, with nothing inside it"
    after = body[len(blob):]
    if after:  # the blob was all written before the deadline: the overdue head is then answered on its own
        assert _error_json(after)[::2] == (408, "no complete request head within 1s")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_stop_waits_for_a_slow_download_no_longer_than_the_shutdown_timeout(sandbox: Sandbox, tmp_path: Path,
                                                                             workers: str) -> None:
    blob, digest, proxy = _serving_a_blob(sandbox, tmp_path, 64 << 20, "timeouts:\n  shutdown: 1\n",
                                          "--workers", workers)
    under_way = threading.Event()

    def read_slowly(connection: socket.socket) -> int:
        received = 0
        while chunk := connection.recv(64 << 10):
            received += len(chunk)
            under_way.set()
            time.sleep(0.05)  # about 1 MiB/s: the download is under way at the stop
        return received

    try:
        with _connect(proxy, 20, 64 << 10) as connection, concurrent.futures.ThreadPoolExecutor(1) as pool:
            connection.sendall(f"GET /v2/library/bigblob/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            reading = pool.submit(read_slowly, connection)
            assert under_way.wait(20), "the blob is on its way"
            started = time.monotonic()
            proxy.service.stop(timeout=20)
            seconds = time.monotonic() - started
            received = reading.result(20)
        log = proxy.service.log_tail()
    finally:
        proxy.stop()
    assert 0.9 < seconds < 6, f"stopped after {seconds:.1f}s"
    assert received < len(blob), "the download was cut off, not finished"
    assert "Cancel 1 running task(s), timeout graceful shutdown exceeded" in log
    assert "Traceback" not in log


def test_a_request_still_unanswered_at_the_stop_gets_error_json(sandbox: Sandbox, tmp_path: Path) -> None:
    asked = threading.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        asked.set()
        await reader.read()  # a trust server that never answers

    server = RawServer(silent).start()
    config = tmp_path / "stop.yaml"
    config.write_text("timeouts:\n  shutdown: 1\n  trust: 60\n")
    proxy = start_proxy(tmp_path, sandbox.registry.url, f"http://127.0.0.1:{server.port}", sandbox.ca.ca_cert,
                        extra=("--config", str(config)))
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(httpx.get, f"{proxy.url}/v2/library/demo/manifests/v1", timeout=30)
            assert asked.wait(20), "the request is waiting on the trust server"
            proxy.service.stop(timeout=20)
            response = waiting.result(20)
        log = proxy.service.log_tail()
    finally:
        proxy.stop()
        server.stop()
    assert (response.status_code, response.headers["content-type"]) == (503, "application/json")
    assert response.json()["errors"][0]["message"] == "pullgate is stopping; try again"
    assert "Traceback" not in log


def test_workers_log_like_the_single_process(sandbox: Sandbox, tmp_path: Path) -> None:
    proxy = start_proxy(tmp_path, sandbox.registry.url, sandbox.notary.url, sandbox.ca.ca_cert,
                        extra=("--workers", "2"))
    try:
        assert httpx.get(f"{proxy.url}/v2/library/demo/manifests/dev").status_code == 403
        time.sleep(0.5)
        log = proxy.service.log_tail()
    finally:
        proxy.stop()
    assert " WARNING pullgate: refused GET /v2/library/demo/manifests/dev: remote trust data does not exist" in log
