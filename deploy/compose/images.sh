#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# `make images`: builds every image of Mercato from the Dockerfile at the repository
# root, one target per image (the `FROM runtime AS <image>` stages), tagged
# mercato/<image>:$TAG. On the official bases by default; with --offline, on the local
# stand-ins (offline/README.md), which it builds first, for machines that cannot pull.
#   images.sh [--offline] [--tag TAG] [IMAGE...]
set -euo pipefail

COMPOSE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$COMPOSE_DIR/../.." && pwd)"
source "$COMPOSE_DIR/engine.sh"
source "$COMPOSE_DIR/offline/standins.sh"

# The images the Dockerfile defines, in its order.
image_targets() { sed -n 's/^FROM runtime AS \([a-z0-9-]*\)$/\1/p' "$REPO/Dockerfile"; }

# build_image NAME TAG [BUILD ARGS...]: the member of the same name, its own target.
build_image() {
    local name=$1 tag=$2
    shift 2
    info "building mercato/$name:$tag"
    low_priority timeout "$BUILD_TIMEOUT" docker buildx build --progress="${MERCATO_BUILD_PROGRESS:-quiet}" --load \
        --build-arg MEMBER="$name" --target "$name" -t "mercato/$name:$tag" "$@" "$REPO" >/dev/null
}

# build_images OFFLINE TAG [IMAGE...]: OFFLINE is 1 for the stand-in bases.
build_images() {
    local offline=$1 tag=$2
    shift 2
    local names=("$@") extra=()
    if ((${#names[@]} == 0)); then
        mapfile -t names < <(image_targets)
    fi
    if ((offline)); then
        standins_core
        # No NAT on such a machine (dockerd --iptables=false): RUN steps reach the
        # package registries through the host's network.
        extra=(--network host --build-arg PYTHON_IMAGE="$OFFLINE_PYTHON_IMAGE" --build-arg UV_IMAGE="$OFFLINE_UV_IMAGE")
    fi
    local name
    for name in "${names[@]}"; do
        build_image "$name" "$tag" "${extra[@]}"
    done
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    offline=0
    tag=dev
    images=()
    while (($#)); do
        case "$1" in
            --offline) offline=1 ;;
            --tag)
                tag=$2
                shift
                ;;
            -h | --help)
                sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
                exit 0
                ;;
            *) images+=("$1") ;;
        esac
        shift
    done
    engine_install
    engine_start
    trap engine_stop EXIT
    start=$SECONDS
    build_images "$offline" "$tag" "${images[@]}"
    if ((offline)) && ((${#images[@]} == 0)); then
        standins_observability
    fi
    info "built in $((SECONDS - start))s:"
    docker image ls --filter "reference=mercato/*:$tag" --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' >&2
fi
