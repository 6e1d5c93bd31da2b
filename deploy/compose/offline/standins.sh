# shellcheck shell=bash
# Local stand-ins for the upstream images docker-compose.yml uses, for machines that
# cannot pull from an image registry (this project's CI). Sourced after engine.sh.
# README.md in this directory lists each stand-in and the part of its upstream image
# it reproduces; users with registry access never need any of this.

OFFLINE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEPLOY_DIR="$(cd "$OFFLINE_DIR/../.." && pwd)"
DEBIAN_MIRROR="${MERCATO_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SECURITY_MIRROR="${MERCATO_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

BOOKWORM_IMAGE=mercato-offline/bookworm:12
JAEGER_IMAGE=mercato-offline/jaeger:2.13.0
OFFLINE_PYTHON_IMAGE=mercato-offline/python:3.11-bookworm
# The uv stand-in carries the version of the official image the Dockerfile names.
OFFLINE_UV_IMAGE="mercato-offline/uv:$(sed -n 's|^ARG UV_IMAGE=.*uv:||p' "$DEPLOY_DIR/../Dockerfile")"

image_present() { docker image inspect "$1" >/dev/null 2>&1; }

# bookworm_image: a Debian bookworm root filesystem from debootstrap (the way the
# official debian images are made), imported as an image. Once per engine.
bookworm_image() {
    image_present "$BOOKWORM_IMAGE" && return 0
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    local root
    root=$(mktemp -d "$CONTAINERS_DIR/bookworm.XXXXXX")
    info "debootstrap --variant=minbase bookworm from $DEBIAN_MIRROR (about a minute)"
    if ! low_priority timeout 900 debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$DEBIAN_MIRROR" \
        >"$CONTAINERS_DIR/debootstrap.log" 2>&1; then
        rm -rf "$root"
        tail -n 20 "$CONTAINERS_DIR/debootstrap.log" >&2
        die "debootstrap failed (log: $CONTAINERS_DIR/debootstrap.log)"
    fi
    cat >"$root/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
deb $DEBIAN_SECURITY_MIRROR bookworm-security main
EOF
    # Certificate authorities this machine trusts beyond Debian's (a TLS-inspecting
    # egress proxy, say) are trusted inside too, or no build step could reach PyPI or
    # Maven Central from here. Only these stand-ins get them, never the official bases.
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
        chroot "$root" update-ca-certificates >/dev/null 2>&1
    fi
    # As in the official slim images: no recommends, no documentation, no apt caches.
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
        >"$root/etc/apt/apt.conf.d/90mercato-offline"
    printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
        >"$root/etc/dpkg/dpkg.cfg.d/90mercato-offline"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "${root:?}"/dev/*
    tar --numeric-owner -C "$root" -c . |
        docker import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
            - "$BOOKWORM_IMAGE" >/dev/null
    rm -rf "$root"
}

# standin_build NAME CONTEXT [ARGS...]: builds offline/NAME/Dockerfile as image NAME.
standin_build() {
    local image=$1 dockerfile=$2 context=$3
    shift 3
    info "building the stand-in $image"
    low_priority timeout "$BUILD_TIMEOUT" docker buildx build --progress="${MERCATO_BUILD_PROGRESS:-quiet}" --network host --load \
        --build-arg BOOKWORM_IMAGE="$BOOKWORM_IMAGE" --build-arg PYTHON_IMAGE="$OFFLINE_PYTHON_IMAGE" \
        -f "$dockerfile" -t "$image" "$@" "$context" >/dev/null
}

# standins_core: the bases of our images and the servers of the core stack.
standins_core() {
    bookworm_image
    standin_build "$OFFLINE_PYTHON_IMAGE" "$OFFLINE_DIR/python/Dockerfile" "$OFFLINE_DIR/python"
    standin_build "$OFFLINE_UV_IMAGE" "$OFFLINE_DIR/uv/Dockerfile" "$OFFLINE_DIR/uv" \
        --build-arg UV_VERSION="${OFFLINE_UV_IMAGE##*:}"
    standin_build mercato-offline/postgres:15-bookworm "$OFFLINE_DIR/postgres/Dockerfile" "$OFFLINE_DIR/postgres"
    standin_build mercato-offline/redis:7-bookworm "$OFFLINE_DIR/redis/Dockerfile" "$OFFLINE_DIR/redis"
    standin_build mercato-offline/openssl:bookworm "$OFFLINE_DIR/openssl/Dockerfile" "$OFFLINE_DIR/openssl"
    # The broker's jars come from the native stack's pom (deploy/local/kafka), so both
    # run the same Kafka: the build context is deploy/.
    standin_build mercato-offline/kafka:3.9.1 "$OFFLINE_DIR/kafka/Dockerfile" "$DEPLOY_DIR"
}

# standins_observability: those of the observability profile that can be made here
# (README.md: Grafana cannot, Jaeger and the collector are not done).
standins_observability() {
    bookworm_image
    standin_build mercato-offline/prometheus:2-bookworm "$OFFLINE_DIR/prometheus/Dockerfile" "$OFFLINE_DIR/prometheus"
    # Jaeger's binary is the one `make traces` builds (ten minutes of Go, so only when
    # asked for): the image waits for it rather than building it again.
    local jaeger="${MERCATO_TOOLS_DIR:-$MERCATO_STATE_DIR/tools}/bin/jaeger"
    if [[ -x $jaeger ]]; then
        local context
        context=$(mktemp -d "$CONTAINERS_DIR/jaeger.XXXXXX")
        cp "$jaeger" "$context/jaeger"
        standin_build "$JAEGER_IMAGE" "$OFFLINE_DIR/jaeger/Dockerfile" "$context"
        rm -rf "$context"
    else
        info "no Jaeger stand-in: build Jaeger first with make traces"
    fi
}
