#!/bin/sh
# Generates the development secrets into the shared `keys` volume if they are absent:
# the gateway's identity key pair (P-256; services verify with the public half) and the
# secret of the development token issuer (`docker compose run --rm mercato token`).
set -eu

DIR="${KEY_DIR:-/keys}"
OWNER="${KEY_OWNER:-10001:10001}"

command -v openssl >/dev/null 2>&1 || apk add --no-cache openssl >/dev/null
mkdir -p "$DIR"
umask 077
if [ ! -s "$DIR/dev-token-secret" ]; then
    openssl rand -hex 32 >"$DIR/dev-token-secret"
    echo "generated the development token secret"
fi
if [ ! -s "$DIR/identity.pem" ] || [ ! -s "$DIR/identity.pub.pem" ]; then
    openssl ecparam -name prime256v1 -genkey -noout |
        openssl pkcs8 -topk8 -nocrypt -out "$DIR/identity.pem"
    openssl ec -in "$DIR/identity.pem" -pubout -out "$DIR/identity.pub.pem" 2>/dev/null
    echo "generated the identity key pair"
fi
# The services run as this user; only they and root can read the keys.
chown "$OWNER" "$DIR" "$DIR"/*
chmod 0500 "$DIR"
chmod 0400 "$DIR"/*
