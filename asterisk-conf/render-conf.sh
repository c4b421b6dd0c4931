#!/bin/sh
# Render the @NAME@ placeholders of asterisk-conf/*.conf into a target directory, with
# values from defaults.env overridden by the environment. Used by the Docker image;
# the local stack does the same in devstack/asterisk.py.
set -eu
src=$(dirname "$0")
dst=${1:?usage: render-conf.sh TARGET_DIR}
mkdir -p "$dst"
script=$(mktemp)
while IFS='=' read -r key value; do
  case "$key" in ''|'#'*) continue ;; esac
  eval "override=\${$key:-}"
  [ -n "$override" ] && value=$override
  case "$value" in
    change-me*) echo "render-conf: $key still has the example value of deploy/env.example" >&2
                exit 1 ;;
  esac
  esc=$(printf '%s' "$value" | sed 's/[\/&|]/\\&/g')
  printf 's|@%s@|%s|g\n' "$key" "$esc" >> "$script"
done < "$src/defaults.env"
for f in "$src"/*.conf; do
  sed -f "$script" "$f" > "$dst/$(basename "$f")"
  if grep -q '@[A-Z0-9_][A-Z0-9_]*@' "$dst/$(basename "$f")"; then
    echo "render-conf: unreplaced placeholder in $(basename "$f")" >&2; exit 1
  fi
done
rm -f "$script"
