#!/usr/bin/env bash
# `buf breaking` of protos/ against the last released contract: the protos at the git
# commit given (the Makefile's CONTRACT_RELEASE), with the same offline google/api and
# google/rpc copies as scripts/buf.sh. Needs the repository's history (not a shallow
# clone that lacks that commit).
#   scripts/buf-breaking.sh <commit>
set -euo pipefail
release=${1:?usage: scripts/buf-breaking.sh <commit of the last released contract>}
root="$(cd "$(dirname "$0")/.." && pwd)"
git -C "$root" cat-file -e "$release^{commit}" 2>/dev/null || {
  echo "buf breaking: commit $release is not in this clone (fetch the history: git fetch --unshallow)" >&2
  exit 1
}
against=$(mktemp -d)
trap 'rm -rf "$against"' EXIT
git -C "$root" archive "$release" protos | tar -x -C "$against"
# scripts/buf.sh fills protos/.deps (the wheel's google protos) and runs buf from protos/.
"$root/scripts/buf.sh" build -o /dev/null
cp -r "$root/protos/.deps" "$against/protos/.deps"
"$root/scripts/buf.sh" breaking --against "$against/protos"
