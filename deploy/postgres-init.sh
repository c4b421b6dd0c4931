#!/bin/sh
# First start of the postgres container: the two roles callrec expects (as `make up`
# creates them): the schema owner, which runs migrations, and the service's role.
set -eu
for value in "$POSTGRES_PASSWORD" "$CALLREC_OWNER_PASSWORD" "$CALLREC_APP_PASSWORD"; do
  case "$value" in
    change-me*) echo "postgres-init: a password still has the example value of" \
                     "deploy/env.example" >&2; exit 1 ;;
  esac
done
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
CREATE ROLE callrec_owner LOGIN PASSWORD '${CALLREC_OWNER_PASSWORD}';
CREATE ROLE callrec_app LOGIN PASSWORD '${CALLREC_APP_PASSWORD}';
CREATE DATABASE callrec OWNER callrec_owner;
REVOKE ALL ON DATABASE callrec FROM PUBLIC;
GRANT CONNECT ON DATABASE callrec TO callrec_app;
SQL
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname callrec <<SQL
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO callrec_owner;
GRANT USAGE ON SCHEMA public TO callrec_app;
SQL
