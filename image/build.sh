#!/usr/bin/env bash
# build.sh — `make image`: the mesh's OCI image, built with buildah FROM scratch.
#
#   1. the base root filesystem (make-rootfs.sh: debootstrap minbase bookworm), made
#      once and cached as .tools/image/rootfs-<hash of make-rootfs.sh>.tar;
#   2. the wheelhouse: the dependencies pinned in pyproject.toml, resolved for the
#      image's Python (requirements.lock, transitive ones included, by uv) and built
#      by `pip wheel` on the host; made once per change of them in
#      .tools/image/wheels-<hash>/;
#   3. `buildah build --isolation chroot --layers` of image/Containerfile on a staged
#      context (.build/image/context), tagged localhost/wallet-mesh:<version> and
#      localhost/wallet-mesh:<version>-g<commit>, kept in buildah's local storage;
#   4. `skopeo copy` to an OCI archive, .run/image/wallet-mesh-<version>.tar (skipped
#      when the archive already holds this very image).
#
# Prints the image's reference last. Needs root (debootstrap, and buildah without user
# namespaces): re-runs itself through `sudo -n` when that works. Installs buildah,
# skopeo and debootstrap from Debian's packages when missing.
#
# Variables: IMAGE_NAME (localhost/wallet-mesh), IMAGE_VERSION (pyproject's version),
# IMAGE_SOURCE (org.opencontainers.image.source; default: the git remote "origin", if
# any), IMAGE_ARCHIVE_DIR (.run/image), PYTHON (the .venv's python, for pip wheel).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if ((EUID != 0)); then
  if command -v sudo > /dev/null && sudo -n true 2> /dev/null; then
    exec sudo -n --preserve-env=IMAGE_NAME,IMAGE_VERSION,IMAGE_SOURCE,IMAGE_ARCHIVE_DIR,PYTHON \
      "${BASH_SOURCE[0]}" "$@"
  fi
  echo "image: building needs root (debootstrap; buildah without user namespaces)," \
    "or sudo without a password" >&2
  exit 1
fi

say() { echo "image: $*" >&2; }
started=$SECONDS

# --- tools ---------------------------------------------------------------------------
missing=()
command -v buildah > /dev/null || missing+=(buildah)
command -v skopeo > /dev/null || missing+=(skopeo)
command -v debootstrap > /dev/null || missing+=(debootstrap)
# debootstrap checks the mirror's signatures with it (a recommendation only).
[[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)
if ((${#missing[@]} > 0)); then
  say "installing ${missing[*]} with apt-get"
  apt=(env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0
    -o DPkg::Lock::Timeout=300)
  "${apt[@]}" update > /dev/null
  "${apt[@]}" install --no-install-recommends "${missing[@]}" > /dev/null
fi

python=${PYTHON:-$repo/.venv/bin/python}
[[ -x $python ]] || { say "no $python: run 'make venv' first"; exit 1; }
# The wheels must fit the image's interpreter: Debian bookworm's python3 is 3.11.
"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  say "$python is not Python 3.11, the image's (Debian bookworm's python3)"
  exit 1
}

cache=$repo/.tools/image
mkdir -p "$cache"
hash_of() { sha256sum | cut -c1-16; }
# Keep only the newest cached copy of a kind (rootfs-*, wheels-*).
prune_other() {
  local keep=$1 pattern=$2 path
  for path in "$cache"/$pattern; do
    [[ -e $path && $path != "$keep" ]] && rm -rf "$path"
  done
  return 0
}

# --- 1. the base root filesystem -------------------------------------------------------
rootfs=$cache/rootfs-bookworm-$(hash_of < image/make-rootfs.sh).tar
if [[ -f $rootfs ]]; then
  say "base root filesystem: $rootfs (cached)"
else
  step=$SECONDS
  image/make-rootfs.sh "$rootfs"
  say "base root filesystem made in $((SECONDS - step)) s"
  prune_other "$rootfs" 'rootfs-*.tar'
fi

# --- 2. the wheelhouse -----------------------------------------------------------------
# Resolved for the image's interpreter and C library, not the host's: a dependency's
# environment markers (redis needs async-timeout below Python 3.11.3) must be read as
# the image's Python reads them, which pip cannot do for another interpreter. uv's
# resolver can (`uv pip compile --python-version`); pip then builds the wheels of that
# lock on the host. pip itself only runs the installation (from its wheel) and stays
# out of the image.
uv_version=0.13.8
pip_version=26.3
uv=$cache/uv-$uv_version/bin/uv
if [[ ! -x $uv ]]; then
  say "installing uv $uv_version into $cache/uv-$uv_version"
  rm -rf "$cache/uv-$uv_version"
  "$python" -m pip install --quiet --disable-pip-version-check --target "$cache/uv-$uv_version" \
    "uv==$uv_version"
fi
package_version() {
  tar -xOf "$rootfs" ./var/lib/dpkg/status |
    awk -v package="$1" '$0 == "Package: " package { found = 1 }
      found && /^Version:/ { print $2; found = 0 }'  # reads to the end: no SIGPIPE for tar
}
image_python=$(package_version python3.11-minimal)
image_python=${image_python%%-*}
image_glibc=$(package_version libc6)
image_glibc=${image_glibc%%-*}
requirements=$("$python" -c '
import tomllib
with open("pyproject.toml", "rb") as file:
    print("\n".join(tomllib.load(file)["project"]["dependencies"]))
')
wheels=$cache/wheels-$(printf '%s\n' "$requirements" "python $image_python" "glibc $image_glibc" \
  "uv $uv_version" "pip $pip_version" | hash_of)
if [[ -f $wheels/requirements.lock ]]; then
  say "wheelhouse: $wheels (cached)"
else
  step=$SECONDS
  say "wheelhouse for Python $image_python, glibc $image_glibc: uv pip compile, pip wheel"
  rm -rf "$wheels.tmp"
  mkdir -p "$wheels.tmp/pip"
  printf '%s\n' "$requirements" > "$wheels.tmp/requirements.in"
  "$uv" pip compile --quiet --no-header --no-annotate --no-config \
    --python-version "$image_python" --python-platform "x86_64-manylinux_${image_glibc/./_}" \
    --output-file "$wheels.tmp/requirements.lock" "$wheels.tmp/requirements.in"
  "$python" -m pip wheel --quiet --disable-pip-version-check --no-deps \
    --wheel-dir "$wheels.tmp" --requirement "$wheels.tmp/requirements.lock"
  "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --dest "$wheels.tmp/pip" "pip==$pip_version"
  mv "$wheels.tmp"/pip/pip-*.whl "$wheels.tmp/pip/pip.whl"
  mv "$wheels.tmp" "$wheels"
  say "wheelhouse made in $((SECONDS - step)) s ($(ls "$wheels"/*.whl | wc -l) wheels)"
  prune_other "$wheels" 'wheels-*'
fi

# --- 3. the image ------------------------------------------------------------------------
name=${IMAGE_NAME:-localhost/wallet-mesh}
version=${IMAGE_VERSION:-$("$python" -c '
import tomllib
with open("pyproject.toml", "rb") as file:
    print(tomllib.load(file)["project"]["version"])
')}
revision=$(git rev-parse HEAD)
short_revision=$(git rev-parse --short=12 HEAD)
# Changes not committed: the revision label says so, and the tag is not the commit's.
if [[ -n $(git status --porcelain -- image services gen envoy pyproject.toml) ]]; then
  revision+=-dirty
  short_revision+=-dirty
fi
source_url=${IMAGE_SOURCE:-$(git config --get remote.origin.url || true)}
# The commit's time, not the clock's: an unchanged tree then builds the very same image
# (every layer and the labels cached), which is not exported again. A tree with changes
# gets the clock's.
if [[ $revision == *-dirty ]]; then
  created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
else
  created=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ)
fi

context=$repo/.build/image/context
rm -rf "$context"
mkdir -p "$context/app"
# Hard links: the context costs no copy of the big files.
ln "$rootfs" "$context/rootfs.tar"
cp -al "$wheels" "$context/wheels"
cp image/wallet-service "$context/"
# The code: what git tracks (or would) in the folders the services read at run time.
git ls-files -z --cached --others --exclude-standard -- services gen/python gen/descriptors envoy |
  tar --null --no-recursion --files-from=- -cf - | tar -xf - -C "$context/app"
# No secret goes in: a key file left in the tree (untracked files are taken too) stops
# the build.
if keys=$(grep -rlI -e '-----BEGIN [A-Z ]*PRIVATE KEY-----' "$context/app"); then
  say "refusing to build: private keys in the code:"$'\n'"${keys//$context\/app\//  }"
  exit 1
fi
# Read-only to everyone but root, whatever the umask of the checkout.
chmod -R u+rwX,go+rX,go-w "$context/app" "$context/wallet-service"

labels=(
  --label "org.opencontainers.image.title=wallet-mesh"
  --label "org.opencontainers.image.description=Wallet mesh: the user, transaction, gateway and rate-limit services and Envoy (entry point: wallet-service)"
  --label "org.opencontainers.image.version=$version"
  --label "org.opencontainers.image.revision=$revision"
  --label "org.opencontainers.image.created=$created"
  --label "org.opencontainers.image.base.name=debian:bookworm (debootstrap --variant=minbase)"
  --label "org.opencontainers.image.licenses=NOASSERTION"
)
[[ -n $source_url ]] && labels+=(--label "org.opencontainers.image.source=$source_url")

step=$SECONDS
say "buildah build $name:$version"
buildah build --quiet --isolation chroot --layers --force-rm --format oci --pull=never \
  --file image/Containerfile --tag "$name:$version" --tag "$name:$version-g$short_revision" \
  "${labels[@]}" "$context" > "$repo/.build/image/build.log" 2>&1 || {
  tail -n 40 "$repo/.build/image/build.log" >&2
  exit 1
}
image_id=$(buildah inspect --type image --format '{{.FromImageID}}' "$name:$version")
# The tags of earlier commits' builds go (their layers stay as long as they are cache).
buildah images --format '{{.Name}}:{{.Tag}}' | while read -r tag; do
  if [[ $tag == "$name:$version-g"* && $tag != "$name:$version-g$short_revision" ]]; then
    buildah rmi "$tag" > /dev/null
  fi
done
size=$(buildah images --format '{{.Size}}' "$image_id" | awk 'NR == 1')  # awk reads all: no SIGPIPE
say "built $name:$version ($size) in $((SECONDS - step)) s"

# --- 4. the OCI archive ------------------------------------------------------------------
archive_dir=${IMAGE_ARCHIVE_DIR:-$repo/.run/image}
archive=$archive_dir/wallet-mesh-$version.tar
mkdir -p "$archive_dir"
# The same image (same id) is not exported twice.
if [[ -f $archive && $(cat "$archive.image-id" 2> /dev/null) == "$image_id" ]]; then
  say "archive: $archive (already holds this image)"
else
  step=$SECONDS
  rm -f "$archive.tmp"
  skopeo copy --quiet "containers-storage:$name:$version" "oci-archive:$archive.tmp:$name:$version" \
    2> >(grep -v 'level=info' >&2)
  mv "$archive.tmp" "$archive"
  echo "$image_id" > "$archive.image-id"
  say "archive: $archive ($(du -h "$archive" | cut -f1)) in $((SECONDS - step)) s"
fi
say "done in $((SECONDS - started)) s"
echo "$name:$version"
