#!/bin/sh
# The Debian 12 base every Enclave image is built FROM (the images' BASE_IMAGE default), made here
# with debootstrap and `docker import`, since no image registry need be reachable: about 40 s.
# Where a registry is, `BASE_IMAGE=debian:bookworm-slim images/build.sh` works as well.
#
#   images/base.sh [TAG]     (root; TAG defaults to enclave/debian:bookworm; kept if it exists)
set -eu
tag="${1:-enclave/debian:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag: present"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "images/base.sh needs debootstrap: apt-get install debootstrap" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 \
  || { cat "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://security.debian.org/debian-security bookworm-security main
SOURCES
# No package caches or lists in the image: each build step fetches the lists it needs.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" --numeric-owner -c . | docker import --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "base image $tag: built"
