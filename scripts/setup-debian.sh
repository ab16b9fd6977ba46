#!/usr/bin/env bash
# Installs what pullgate's sandbox and tests run on a Debian 12 machine:
# the real registry, notary, image tools and clients, then a virtualenv with
# pullgate in it. Safe to run again: it installs only what is missing.
set -euo pipefail

PACKAGES=(docker-registry notary skopeo umoci docker.io containerd runc podman
          openssl curl iproute2 util-linux ca-certificates python3-venv faketime apache2-utils ${EXTRA_PACKAGES:-})
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

log() { printf '[setup] %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${db:Status-Abbrev}' "$package" 2>/dev/null | grep -q '^ii' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  # Keep the packages' postinst scripts from starting system-wide docker,
  # containerd or registry services: the sandbox starts its own on free ports.
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  status=0
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" || status=$?
  [ -n "$made_policy" ] && as_root rm -f /usr/sbin/policy-rc.d
  [ "$status" = 0 ] || { log "apt-get install failed (exit $status)"; exit "$status"; }
fi

for tool in docker-registry notary notary-server skopeo umoci dockerd containerd ctr podman openssl faketime htpasswd; do
  command -v "$tool" >/dev/null || { log "ERROR: $tool is still missing after the install"; exit 1; }
done

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import proxy, pytest, httpx, starlette, uvicorn' 2>/dev/null \
   || [ pyproject.toml -nt "$VENV/.installed" ]; then
  log "installing pullgate into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[test]'
  touch "$VENV/.installed"
fi
log "ready"
