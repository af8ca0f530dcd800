#!/bin/sh
# Build Enclave's images (reusing cached layers) and print their sizes:
#   enclave/debian:bookworm  the local Debian 12 base (images/base.sh), unless BASE_IMAGE names another
#   enclave/sandbox          the operators' environment, every sandbox container's image
#   enclave/hub              the hub, its proxy and services, and the launcher (docker-compose.yml);
#                            it copies the operators' environment from enclave/sandbox (SANDBOX_IMAGE)
#   enclave/postgres         PostgreSQL 15 for the hub's databases (docker-compose.yml)
#   enclave/holder           the data holder's tools (SDV, CPU torch): only when named, it is large
#
#   images/build.sh                 sandbox, hub and postgres
#   images/build.sh holder          the data holder's image (TORCH_WHEEL=path of a CPU torch wheel)
#   images/build.sh hub postgres    any of them, in the order given
# From anywhere; root or a member of the docker group.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
base="${BASE_IMAGE:-enclave/debian:bookworm}"
ca="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
# BuildKit (for the CA bundle as a build secret): Debian's docker.io client (20.10) has it built in;
# a newer client needs its buildx plugin, so Debian's is preferred where both are installed.
docker=${DOCKER:-$( [ -x /usr/bin/docker ] && echo /usr/bin/docker || echo docker )}
images=${*:-sandbox hub postgres}
for image in $images; do
  [ -f "$repo/images/$image/Dockerfile" ] || {
    echo "images/build.sh: no image '$image' (images/*/Dockerfile: $(cd "$repo/images" && ls -d */ | tr -d / | tr '\n' ' '))" >&2
    exit 2
  }
done
[ -f "$ca" ] || { echo "images/build.sh: no CA bundle at $ca (CA_BUNDLE)" >&2; exit 2; }
[ -n "${BASE_IMAGE:-}" ] || "$repo/images/base.sh" "$base"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for image in $images; do
  if [ "$image" = holder ]; then
    # torch's CPU build, from a wheel on this machine (its index is not reachable from builds here):
    # copied into build/wheels/ (ignored by git; the only wheel the build context takes from there).
    wheel=${TORCH_WHEEL:-$(ls /opt/wheels/torch-*+cpu-cp311-*.whl 2>/dev/null | tail -n 1)}
    [ -n "$wheel" ] && [ -f "$wheel" ] || {
      echo "images/build.sh: the holder image needs torch's CPU wheel for Python 3.11: TORCH_WHEEL=/path/torch-…+cpu-cp311-….whl" >&2
      exit 2
    }
    mkdir -p "$repo/build/wheels"
    find "$repo/build/wheels" -name 'torch-*.whl' ! -name "$(basename "$wheel")" -delete
    cmp -s "$wheel" "$repo/build/wheels/$(basename "$wheel")" || cp "$wheel" "$repo/build/wheels/"
  fi
  if [ "$image" = hub ] && ! "$docker" image inspect "${SANDBOX_IMAGE:-enclave/sandbox}" >/dev/null 2>&1; then
    echo "images/build.sh: the hub image copies the operators' environment from ${SANDBOX_IMAGE:-enclave/sandbox}: build it first (images/build.sh sandbox hub)" >&2
    exit 2
  fi
  echo "building enclave/$image"
  # BuildKit's progress is shown only when a build fails.
  DOCKER_BUILDKIT=1 "$docker" build --progress=plain --secret "id=ca,src=$ca" --build-arg "BASE_IMAGE=$base" \
    --build-arg "SANDBOX_IMAGE=${SANDBOX_IMAGE:-enclave/sandbox}" \
    -f "$repo/images/$image/Dockerfile" -t "enclave/$image" "$repo" >"$log" 2>&1 \
    || { tail -n 60 "$log" >&2; echo "building enclave/$image failed" >&2; exit 1; }
done
"$docker" image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep '^enclave/' | sort
