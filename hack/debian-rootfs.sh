#!/usr/bin/env bash
# Builds (once) and prints the path of a Debian 12 (bookworm) root filesystem
# for test/router, which boots it with systemd-nspawn as the lab's router.
# The tree is cached under ~/.cache/bgplb/debian-rootfs/<key>/, outside the
# checkout like the envtest binaries; the key changes with the package list
# (and ROOTFS_REV), so editing either builds a new tree. The tests never
# write into the cache: each run boots an overlay (or a copy) of it.
#
#   hack/debian-rootfs.sh            build if needed, print the path
#   hack/debian-rootfs.sh --key      print the cache key only
#
# Needs root and debootstrap (hack/install-deps.sh). Packages come from the
# Debian mirror in /etc/apt/sources.list* (the only mirror CI machines reach),
# or $DEBIAN_MIRROR.
set -euo pipefail

SUITE=bookworm
# Bump when the tree's contents change in a way the package list does not show.
ROOTFS_REV=1
# systemd as PID 1 and D-Bus (systemctl), the firewall (ferm writes through
# iptables-legacy), nftables, iproute2, procps (sysctl), adduser and
# init-system-helpers for the .deb's maintainer scripts, conntrack, kmod.
PKGS=(systemd systemd-sysv dbus libpam-systemd iproute2 iptables nftables ferm
  procps adduser init-system-helpers conntrack kmod ca-certificates)

CACHE="${BGPLB_CACHE:-$HOME/.cache/bgplb}/debian-rootfs"
key="$SUITE-r$ROOTFS_REV-$(printf '%s\n' "$(uname -m)" "${PKGS[@]}" | sha256sum | cut -c1-12)"
if [[ "${1:-}" == "--key" ]]; then
  echo "$key"
  exit 0
fi
dir="$CACHE/$key"
if [[ -f "$dir/.bgplb-rootfs-complete" ]]; then
  echo "$dir"
  exit 0
fi

die() { echo "debian-rootfs: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "building the rootfs needs root (debootstrap)"
command -v debootstrap >/dev/null || die "debootstrap is missing: run hack/install-deps.sh (Debian package debootstrap)"

mirror="${DEBIAN_MIRROR:-}"
if [[ -z "$mirror" ]]; then
  # The first Debian (not -security) mirror apt uses: deb822 URIs: or one-line deb.
  mirror="$(grep -hs -E '^\s*URIs:' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
    awk '{print $2}' | grep -v -- '-security' | grep -E '/debian/?$' | head -1 || true)"
  if [[ -z "$mirror" ]]; then
    mirror="$(grep -hs -E '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '{for (i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}' | grep -E '/debian/?$' | head -1 || true)"
  fi
fi
[[ -n "$mirror" ]] || die "no Debian mirror found in /etc/apt/sources.list*; set DEBIAN_MIRROR"

mkdir -p "$CACHE"
# One builder at a time; a second caller waits and then finds the tree.
exec 9>"$CACHE/.lock"
flock 9
if [[ -f "$dir/.bgplb-rootfs-complete" ]]; then
  echo "$dir"
  exit 0
fi

tmp="$CACHE/.build-$key.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
echo "debian-rootfs: debootstrap $SUITE from $mirror into $tmp (about a minute or two)" >&2
start=$SECONDS
inc="$(IFS=,; echo "${PKGS[*]}")"
if ! debootstrap --variant=minbase --include="$inc" "$SUITE" "$tmp" "$mirror" >"$CACHE/.build-$key.log" 2>&1; then
  tail -30 "$CACHE/.build-$key.log" >&2
  die "debootstrap failed (full log: $CACHE/.build-$key.log)"
fi

# Boot-time settings for a container that lives in a lab namespace.
echo bgplb-router >"$tmp/etc/hostname"
# systemd-nspawn fills in the machine id; an empty file makes it transient.
: >"$tmp/etc/machine-id"
# ferm: start at boot (Debian's debconf default leaves it off).
if [[ -f "$tmp/etc/default/ferm" ]]; then
  sed -i 's/^ENABLED=.*/ENABLED="yes"/' "$tmp/etc/default/ferm"
fi
# No units the lab router does not need: a console login, timers that wake
# apt and man-db, network tooling that would fight the lab's addresses.
for u in console-getty.service getty@.service systemd-networkd.service systemd-resolved.service \
  apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer fstrim.timer \
  systemd-timesyncd.service; do
  ln -sf /dev/null "$tmp/etc/systemd/system/$u"
done
# policy-rc.d from debootstrap (if any) would stop the maintainer scripts
# from starting services inside the booted router.
rm -f "$tmp/usr/sbin/policy-rc.d"
apt_clean() { rm -rf "$tmp/var/cache/apt/archives/"*.deb "$tmp/var/lib/apt/lists/"*_Packages 2>/dev/null || true; }
apt_clean
echo "$key $(date -u +%FT%TZ) $mirror" >"$tmp/.bgplb-rootfs-complete"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
rm -f "$CACHE/.build-$key.log"
echo "debian-rootfs: built $dir in $((SECONDS - start)) s" >&2
echo "$dir"
