#!/usr/bin/env bash
# Runs buf on protos/ offline: the google/api and google/rpc imports come from
# the googleapis-common-protos wheel instead of the buf registry.
#   scripts/buf.sh lint
#   scripts/buf.sh build
# (`buf breaking` against the last released contract: scripts/buf-breaking.sh.)
set -euo pipefail
cd "$(dirname "$0")/../protos"
googleapis=$(python -c 'import pathlib, google.api.annotations_pb2 as m; print(pathlib.Path(m.__file__).parents[2])')
rm -rf .deps && mkdir -p .deps/google
cp -r "$googleapis/google/api" "$googleapis/google/rpc" .deps/google/
find .deps -type f ! -name '*.proto' -delete
exec buf "$@"
