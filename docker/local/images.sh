#!/usr/bin/env bash
# Stand-ins for the official base images (python:3.11-slim, postgres:16), built from Debian's
# packages, for a machine that reaches Debian's mirror and PyPI but no image registry. Then
#   export PYTHON_IMAGE=imgsearch-local/python:3.11 POSTGRES_IMAGE=imgsearch-local/postgres:15
# and docker compose builds and starts the stack from them. An image that exists is kept;
# `docker rmi` it to build it again. Needs root (debootstrap) and a running Docker engine.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON_IMAGE=imgsearch-local/python:3.11
POSTGRES_IMAGE=imgsearch-local/postgres:15
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

exists() { docker image inspect "$1" >/dev/null 2>&1; }

if ! exists "$PYTHON_IMAGE"; then
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include=ca-certificates,python3,python3-venv,make \
    bookworm "$root" "$MIRROR" >/dev/null
  # Trust what this machine trusts (PyPI may be reached through a TLS proxy with its own CA),
  # and make pip use the system bundle rather than its own.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
  fi
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import -c 'CMD ["python3"]' - "$PYTHON_IMAGE" >/dev/null
fi

if ! exists "$POSTGRES_IMAGE"; then
  docker build -q -t "$POSTGRES_IMAGE" --build-arg "BASE=$PYTHON_IMAGE" -f postgres.Dockerfile . >/dev/null
fi
echo "PYTHON_IMAGE=$PYTHON_IMAGE POSTGRES_IMAGE=$POSTGRES_IMAGE"
