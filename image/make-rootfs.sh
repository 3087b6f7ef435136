#!/usr/bin/env bash
# make-rootfs.sh OUT.tar — the image's base: a Debian bookworm root filesystem made by
# `debootstrap --variant=minbase` (no registry can be pulled from), with Python 3.11 and
# the CA certificates, brought up to date from bookworm-security, then stripped of what
# a container never reads (docs, man pages, apt's lists and caches). Written as a tar
# (numeric owners) to OUT.tar, atomically: build.sh calls this only when OUT.tar is
# missing, and names OUT.tar after a hash of this script, so a change here makes a new one.
#
# Runs as root (debootstrap and chroot need it). IMAGE_DEBIAN_MIRROR and
# IMAGE_DEBIAN_SECURITY_MIRROR move the package sources.
set -euo pipefail

out=${1:?usage: make-rootfs.sh OUT.tar}
suite=bookworm
mirror=${IMAGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${IMAGE_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# python3: Debian bookworm's is 3.11, the project's Python. ca-certificates: TLS to
# the payment providers (Stripe, PayPal) and to a managed PostgreSQL.
packages=python3,ca-certificates

work=$(mktemp -d "$(dirname "$out")/rootfs.XXXXXX")
root=$work/root
mounted=()
cleanup() {
  local status=$?
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2> /dev/null || true; done
  rm -rf "$work"
  exit $status
}
trap cleanup EXIT

echo "make-rootfs: debootstrap --variant=minbase $suite ($mirror)"
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" > "$work/debootstrap.log" 2>&1 || {
  tail -n 40 "$work/debootstrap.log" >&2
  exit 1
}

# The same sources as a Debian container image has, so security updates apply now and
# `apt-get` works later in a debugging session.
rm -f "$root/etc/apt/sources.list"
cat > "$root/etc/apt/sources.list.d/debian.sources" << EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security_mirror
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

for fs in proc sys dev; do
  mount --bind "/$fs" "$root/$fs"
  mounted+=("$root/$fs")
done
# DNS for apt inside the chroot (the image gets its resolv.conf from its runtime).
cp /etc/resolv.conf "$root/etc/resolv.conf"
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
echo "make-rootfs: applying updates from $suite-updates and $suite-security"
in_root apt-get -q update > "$work/apt.log" 2>&1 || { tail -n 40 "$work/apt.log" >&2; exit 1; }
in_root apt-get -q -y -o Dpkg::Use-Pty=0 upgrade >> "$work/apt.log" 2>&1 || { tail -n 40 "$work/apt.log" >&2; exit 1; }
in_root apt-get clean
for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[i]}"; done
mounted=()

# What a container never reads. (dpkg's database stays: scanners read it.)
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
  "$root"/var/log/* "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
  "$root"/usr/share/locale/* "$root"/usr/share/lintian "$root"/tmp/* "$root"/var/tmp/* \
  "$root"/etc/resolv.conf "$root"/etc/hostname "$root"/etc/machine-id
# Python's compiled modules are kept (no compiling at start-up: the root is read-only).
# Device nodes come from the container runtime, never from the image.
find "$root/dev" -mindepth 1 -delete

tar --numeric-owner -C "$root" -cf "$work/rootfs.tar" .
mv "$work/rootfs.tar" "$out"
echo "make-rootfs: wrote $out ($(du -h "$out" | cut -f1))"
