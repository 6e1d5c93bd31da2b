#!/usr/bin/env bash
# Shared by docker-compose.yml and the dev overlay's Postgres.
# Runs once, when the Postgres volume is empty (docker-entrypoint-initdb.d): one role and
# one database per service. Each role owns its database and nothing else, and PUBLIC may
# not connect, so a service can reach its own database only.
set -euo pipefail

for svc in order inventory payment notification; do
    var="${svc^^}_DB_PASSWORD"
    password="${!var:-$svc-dev}"
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v role="$svc" -v password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"role" OWNER :"role";
REVOKE ALL ON DATABASE :"role" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"role" TO :"role";
SQL
done
