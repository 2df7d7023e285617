#!/bin/sh
# Runs once, when the PostgreSQL volume is created: the gateway's login role, owning
# nothing. Its privileges are granted by `blindpost db grant` after the schema exists.
set -eu
psql -v ON_ERROR_STOP=1 -v password="$BLINDPOST_APP_DB_PASSWORD" \
     --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE blindpost_app LOGIN PASSWORD :'password';
SQL
