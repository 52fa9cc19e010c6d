#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the main job: the seed tutorial
# end to end on a throwaway embedded (SQLite) store.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/topoipam demo "$@"
