#!/usr/bin/env bash
# Build the Neo4j Community image locally, with no container registry:
#
#   localhost/circuitstore-debian-jre:bookworm   Debian bookworm minbase + OpenJDK 17 JRE,
#                                                made with debootstrap and `import`ed (cached);
#   localhost/circuitstore-neo4j:<neo4j version> that base + the Maven-assembled lib/ +
#                                                docker/entrypoint.sh (the official image's
#                                                environment contract).
#
# The build is skipped when the image already carries a label with the same content hash of
# Containerfile, entrypoint.sh and pom.xml. FORCE=1 rebuilds anyway; FORCE_BASE=1 also
# rebuilds the base. CONTAINER_ENGINE=podman|docker picks the engine (default: podman when
# installed, else docker when a Docker engine answers). DEBIAN_MIRROR overrides the mirror.
#
# debootstrap needs root (or sudo).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$HERE/pom.xml"
NEO4J_VERSION="$(sed -n 's:.*<neo4j.version>\(.*\)</neo4j.version>.*:\1:p' "$POM" | head -n1)"
IMAGE="${IMAGE:-localhost/circuitstore-neo4j:$NEO4J_VERSION}"
BASE_IMAGE="${BASE_IMAGE:-localhost/circuitstore-debian-jre:bookworm}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
HASH_LABEL="io.circuitstore.content-hash"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

log() { echo "build-image: $*" >&2; }
die() { echo "build-image: error: $*" >&2; exit 1; }

pick_engine() {
  if [ -n "${CONTAINER_ENGINE:-}" ]; then echo "$CONTAINER_ENGINE"; return; fi
  if command -v podman >/dev/null; then echo podman; return; fi
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then echo docker; return; fi
  die "neither podman nor a Docker engine is available; run docker/setup-podman.sh first"
}
ENGINE="$(pick_engine)"

image_exists() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

image_label() {
  "$ENGINE" image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true
}

content_hash() {
  # The base image is named by tag, not content: FORCE_BASE=1 rebuilds it on purpose.
  cat "$HERE/Containerfile" "$HERE/entrypoint.sh" "$POM" | sha256sum | cut -d' ' -f1
}

build_base() {
  if image_exists "$BASE_IMAGE" && [ -z "${FORCE_BASE:-}" ]; then
    log "base image $BASE_IMAGE is cached"
    return
  fi
  command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] \
    || die "debootstrap is missing; run docker/setup-podman.sh (it installs it)"
  local root start
  root="$(mktemp -d)"
  # The rootfs belongs to root after debootstrap; remove it with the same rights.
  trap '$SUDO rm -rf "$root"' EXIT
  start=$SECONDS
  log "debootstrap bookworm minbase + openjdk-17-jre-headless into $root"
  $SUDO env PATH="/usr/sbin:/sbin:$PATH" debootstrap --variant=minbase \
    --include=openjdk-17-jre-headless,ca-certificates bookworm "$root" "$DEBIAN_MIRROR" \
    >"$root.debootstrap.log" 2>&1 \
    || die "debootstrap failed (see $root.debootstrap.log); check access to $DEBIAN_MIRROR"
  log "debootstrap took $((SECONDS - start)) s"
  # apt lists and caches are not needed at run time and add ~100 MB.
  $SUDO rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  start=$SECONDS
  $SUDO tar -C "$root" -c . | "$ENGINE" import \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
  log "import of $BASE_IMAGE took $((SECONDS - start)) s"
  $SUDO rm -rf "$root" "$root.debootstrap.log"
  trap - EXIT
}

build_image() {
  local hash="$1" ctx start
  ctx="$(mktemp -d)"
  trap 'rm -rf "$ctx"' EXIT
  start=$SECONDS
  log "assembling lib/ with Maven (cached in ~/.m2)"
  mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies -DoutputDirectory="$ctx/lib" \
    || die "Maven could not download the Neo4j jars; check access to Maven Central"
  log "Maven took $((SECONDS - start)) s"
  cp "$HERE/Containerfile" "$HERE/entrypoint.sh" "$ctx/"
  start=$SECONDS
  "$ENGINE" build --file "$ctx/Containerfile" --tag "$IMAGE" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "NEO4J_VERSION=$NEO4J_VERSION" \
    --label "$HASH_LABEL=$hash" "$ctx"
  log "image build took $((SECONDS - start)) s"
  rm -rf "$ctx"
  trap - EXIT
}

main() {
  local hash
  hash="$(content_hash)"
  if [ -z "${FORCE:-}" ] && image_exists "$IMAGE" \
    && [ "$(image_label "$IMAGE" "$HASH_LABEL")" = "$hash" ]; then
    log "$IMAGE is up to date (content hash ${hash:0:12}); FORCE=1 rebuilds"
    return
  fi
  local old_id
  old_id="$("$ENGINE" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
  build_base
  build_image "$hash"
  # The previous build lost its tag; remove it unless something still uses it.
  if [ -n "$old_id" ]; then "$ENGINE" rmi "$old_id" >/dev/null 2>&1 || true; fi
  log "built $IMAGE ($("$ENGINE" image inspect --format '{{.Size}}' "$IMAGE") bytes)"
}

main "$@"
