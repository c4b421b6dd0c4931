#!/bin/sh
# The callrec container's start: refuse the example values of deploy/env.example, seed the
# routing file and the prompts the console edits (kept in the volume, never overwritten:
# an admin's changes survive a new image), then the schema, the prompt audio and the service.
# `--check-only`: the refusal alone (tests).
set -eu

example=$(env | grep -E '^[A-Z0-9_]+=.*change-me' | cut -d= -f1 | tr '\n' ' ' || true)
if [ -n "$example" ]; then
  echo "start-callrec: still the example values of deploy/env.example: $example" >&2
  echo "start-callrec: set real secrets in .env (see README, Docker)" >&2
  exit 1
fi
[ "${1:-}" = "--check-only" ] && exit 0

seed=/opt/callrec
mkdir -p "$(dirname "$CALLREC_CONFIG")" "$CALLREC_PROMPTS_DIR"
[ -e "$CALLREC_CONFIG" ] || cp "$seed/config/demo.toml" "$CALLREC_CONFIG"
cp -R -n "$seed/prompts/." "$CALLREC_PROMPTS_DIR/"
callrec db migrate
callrec prompts build
exec callrec serve
