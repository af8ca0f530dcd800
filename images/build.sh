#!/bin/sh
# Build Enclave's images (reusing cached layers) and print their sizes:
#   enclave/debian:bookworm  the local Debian 12 base (images/base.sh), unless BASE_IMAGE names another
#   enclave/sandbox          the operators' environment, every sandbox container's image
#
#   images/build.sh          (from anywhere; root or a member of the docker group)
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
base="${BASE_IMAGE:-enclave/debian:bookworm}"
ca="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
# BuildKit (for the CA bundle as a build secret): Debian's docker.io client (20.10) has it built in;
# a newer client needs its buildx plugin, so Debian's is preferred where both are installed.
docker=${DOCKER:-$( [ -x /usr/bin/docker ] && echo /usr/bin/docker || echo docker )}
[ -n "${BASE_IMAGE:-}" ] || "$repo/images/base.sh" "$base"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for image in sandbox; do
  echo "building enclave/$image"
  # BuildKit's progress is shown only when a build fails.
  DOCKER_BUILDKIT=1 "$docker" build --progress=plain --secret "id=ca,src=$ca" --build-arg "BASE_IMAGE=$base" \
    -f "$repo/images/$image/Dockerfile" -t "enclave/$image" "$repo" >"$log" 2>&1 \
    || { tail -n 60 "$log" >&2; echo "building enclave/$image failed" >&2; exit 1; }
done
"$docker" image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep '^enclave/' | sort
