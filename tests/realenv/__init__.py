"""Real services on loopback (docker-registry, notary-server, containerd, dockerd)
for pullgate's tests and the `make run` sandbox.

Typical use::

    from tests.realenv.sandbox import seed_sandbox
    with seed_sandbox(tmp_path) as sb:
        sb.images["demo:v1"].digest, sb.registry.url, sb.notary.url

Nothing here reaches beyond 127.0.0.1/::1; every process is stopped by its
own PID.  ``python -m tests.realenv.demo`` (``make run``) runs one interactively.
"""
