#!/usr/bin/env bash
# Makes the two images the local node needs without any registry, into buildah's storage under the
# cache (and as docker-archive tarballs next to it):
#   docker.io/library/python:3.11-slim  - the Dockerfiles' FROM: Debian bookworm (mmdebstrap) with its
#                                         python3.11 and pip, laid out like the official image
#                                         (python/pip on PATH, pip may install system-wide)
#   localhost/smartflow/pause:1         - the pod sandbox: one static binary (devstack/build/pause.c)
# Usage: build-base-images.sh <cache-root> <version>   (the version is part of the cache key)
set -euo pipefail
cache_root=${1:?cache root}
version=${2:?version}
here=$(cd "$(dirname "$0")" && pwd)
out="$cache_root/images"
base_tar="$out/python-3.11-slim-$version.tar"
pause_tar="$out/pause-$version.tar"
storage=(--root "$cache_root/buildah/storage" --runroot "$cache_root/buildah/run" --storage-driver overlay)
if [[ -s "$base_tar" && -s "$pause_tar" ]] && buildah "${storage[@]}" inspect --type image docker.io/library/python:3.11-slim >/dev/null 2>&1; then
  echo "base images $version: cached in $out"; exit 0
fi
mkdir -p "$out"
work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "base image: mmdebstrap bookworm (python3.11, pip)"
mmdebstrap --variant=minbase --include=python3,python3-pip,python3-venv,passwd,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='rm -f "$1"/usr/lib/python3.11/EXTERNALLY-MANAGED' \
  --customize-hook='ln -sf python3 "$1"/usr/bin/python' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  --format=tar bookworm "$work/rootfs.tar" http://deb.debian.org/debian

ctr=$(buildah "${storage[@]}" from scratch)
mnt=$(buildah "${storage[@]}" mount "$ctr")
tar -xf "$work/rootfs.tar" -C "$mnt"
buildah "${storage[@]}" umount "$ctr" >/dev/null
buildah "${storage[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 --cmd python3 "$ctr"
buildah "${storage[@]}" commit --rm "$ctr" docker.io/library/python:3.11-slim
rm -f "$base_tar"
buildah "${storage[@]}" push docker.io/library/python:3.11-slim "docker-archive:$base_tar:docker.io/library/python:3.11-slim"

echo "pause image: static sandbox binary"
gcc -static -Os -s -o "$work/pause" "$here/pause.c"
ctr=$(buildah "${storage[@]}" from scratch)
buildah "${storage[@]}" copy "$ctr" "$work/pause" /pause >/dev/null
buildah "${storage[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
buildah "${storage[@]}" commit --rm "$ctr" localhost/smartflow/pause:1
rm -f "$pause_tar"
buildah "${storage[@]}" push localhost/smartflow/pause:1 "docker-archive:$pause_tar:localhost/smartflow/pause:1"
echo "base images $version: built into $out"
