import json
import urllib.request


def test_signed_tag_served(proxy, sandbox):
    image = sandbox.images["demo:v1"]
    with urllib.request.urlopen(f"{proxy.url}/v2/library/demo/manifests/v1") as r:
        assert r.headers["Docker-Content-Digest"] == image.digest
        assert len(r.read()) == image.length
