"""Tiny test images: built with umoci, pushed with skopeo, inspected with urllib.

The layout holds ``amd64`` and ``arm64`` (one file layer each, config with
architecture/os) and ``multi``, an OCI index referencing both, so tests get
an OCI manifest, an OCI index and (via docker-archive) a docker v2 schema2
manifest without any network access.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .procs import CommandError, NetNS, in_netns, require_tool, run

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)

ARCHES = ("amd64", "arm64")
INDEX_REF = "multi"
_REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class ManifestInfo:
    """What a registry serves for a tag: what notary must sign (digest + length)."""

    digest: str
    length: int
    media_type: str

    @property
    def sha256_hex(self) -> str:
        return self.digest.removeprefix("sha256:")


DEV_REF = "dev"


def _umoci(*args: str) -> None:
    run([require_tool("umoci"), *args])


def _build_arch_image(layout: Path, arch: str, scratch: Path, ref: str | None = None) -> None:
    """One image (ref *ref*, else *arch*) with a config for *arch* and a single layer holding /hello.txt."""
    ref = ref or arch
    image = f"{layout}:{ref}"
    _umoci("new", "--image", image)
    _umoci("config", "--image", image, "--architecture", arch, "--os", "linux",
           "--config.cmd", "/hello.txt", "--config.label", f"org.example.demo={ref}")
    payload = scratch / f"hello-{ref}.txt"
    payload.write_text(f"hello from {ref}\n")
    # `insert` adds exactly one layer without an unpack/repack round trip
    _umoci("insert", "--image", image, str(payload), "/hello.txt")


def _blob_path(layout: Path, digest: str) -> Path:
    algo, hexdigest = digest.split(":", 1)
    return layout / "blobs" / algo / hexdigest


def _read_json_blob(layout: Path, digest: str) -> Any:
    return json.loads(_blob_path(layout, digest).read_bytes())


def _add_index(layout: Path, refs: tuple[str, ...], name: str) -> None:
    """Write an OCI index over *refs* as a blob and tag it *name* in index.json."""
    index_path = layout / "index.json"
    index = json.loads(index_path.read_text())
    by_ref = {m["annotations"][_REF_NAME]: m for m in index["manifests"] if _REF_NAME in m.get("annotations", {})}
    entries = []
    for ref in refs:
        desc = by_ref[ref]
        config = _read_json_blob(layout, _read_json_blob(layout, desc["digest"])["config"]["digest"])
        entries.append({"mediaType": desc["mediaType"], "digest": desc["digest"], "size": desc["size"],
                        "platform": {"architecture": config["architecture"], "os": config["os"]}})
    data = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, indent=2).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _blob_path(layout, digest).write_bytes(data)
    index["manifests"].append({"mediaType": OCI_INDEX, "digest": digest, "size": len(data),
                               "annotations": {_REF_NAME: name}})
    index_path.write_text(json.dumps(index))


def build_oci_layout(workdir: Path) -> Path:
    """Build ``<workdir>/oci`` with refs amd64, arm64, the index ``multi`` over both, and ``dev``
    (amd64 too, in no index: an image of its own, to be left unsigned)."""
    workdir.mkdir(parents=True, exist_ok=True)
    layout = workdir / "oci"
    _umoci("init", "--layout", str(layout))
    for arch in ARCHES:
        _build_arch_image(layout, arch, workdir)
    _build_arch_image(layout, "amd64", workdir, DEV_REF)
    _umoci("gc", "--layout", str(layout))
    _add_index(layout, ARCHES, INDEX_REF)
    return layout


def oci_ref(layout: Path, ref: str) -> str:
    """skopeo source reference for *ref* in *layout*."""
    return f"oci:{layout}:{ref}"


def _policy_file(workdir: Path) -> Path:
    """A private accept-anything policy so /etc/containers/policy.json doesn't matter."""
    path = workdir / "policy.json"
    if not path.exists():
        path.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    return path


def push(src_ref: str, dest_ref: str, *, all_images: bool = False, workdir: Path | None = None,
         netns: NetNS | None = None) -> None:
    """``skopeo copy`` to a plain-HTTP registry; *all_images* for an index.

    *dest_ref* is "HOST:PORT/name:tag" or any skopeo transport reference.
    """
    dest = dest_ref if _has_transport(dest_ref) else f"docker://{dest_ref}"
    argv = [require_tool("skopeo")]
    if workdir is not None:
        argv += ["--policy", str(_policy_file(workdir))]
    argv += ["copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false"]
    if all_images:
        argv.append("--all")
    run([*argv, src_ref, dest], netns=netns)


def _has_transport(ref: str) -> bool:
    return ref.split(":", 1)[0] in {"docker", "oci", "docker-archive", "oci-archive", "dir", "containers-storage"}


def push_docker_v2s2(layout: Path, ref: str, dest_ref: str, workdir: Path,
                     netns: NetNS | None = None) -> None:
    """Push *ref* as a docker v2 schema2 image by going through a docker-archive."""
    archive = workdir / f"{ref}.docker.tar"
    archive.unlink(missing_ok=True)
    repo_tag = dest_ref.split("/", 1)[1] if "/" in dest_ref else dest_ref
    push(oci_ref(layout, ref), f"docker-archive:{archive}:{repo_tag}", workdir=workdir)
    push(f"docker-archive:{archive}", dest_ref, workdir=workdir, netns=netns)


def manifest_info(registry_url: str, name: str, reference: str,
                  netns: NetNS | None = None) -> ManifestInfo:
    """GET the manifest like a modern client (all four types accepted) and hash it."""
    request = urllib.request.Request(f"{registry_url}/v2/{name}/manifests/{reference}",
                                     headers={"Accept": ", ".join(MANIFEST_TYPES)})

    def fetch() -> tuple[bytes, str, str]:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.read(), resp.headers.get("Content-Type", ""), resp.headers.get("Docker-Content-Digest", "")

    body, media_type, header_digest = in_netns(netns, fetch)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    if header_digest and header_digest != digest:
        raise RuntimeError(f"{name}:{reference}: registry says {header_digest}, body hashes to {digest}")
    return ManifestInfo(digest, len(body), media_type)


def upload_blob(registry_url: str, name: str, data: bytes) -> str:
    """Push one blob straight to the registry (monolithic upload); returns its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    location = httpx.post(f"{registry_url}/v2/{name}/blobs/uploads/").headers["location"]
    separator = "&" if "?" in location else "?"
    response = httpx.put(f"{location}{separator}digest={digest}", content=data,
                         headers={"Content-Type": "application/octet-stream"})
    if response.status_code != 201:
        raise CommandError(f"blob upload to {registry_url}/{name} failed: HTTP {response.status_code} {response.text}")
    return digest
