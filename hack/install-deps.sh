#!/usr/bin/env bash
# Installs the Debian packages bgplb's tests and demo use (as root), skipping
# what is already there. Without root it only lists what is missing.
#   iptables      legacy and nf_tables tools: the router agent's firewall backends
#   nftables      nft -f for the native nftables backend's kernel tests
#   iproute2      ip netns / ip route for the kernel tests and the lab
#   frr, bird2    real BGP peers for interop tests and the FRR comparison benchmark
#   ferm          the firewall DebOps uses, driven in the lab
#   conntrack     conntrack -S for the doctor's INVALID counters
#   tcpdump       the demo shows the ICMP redirect and the asymmetric path
#   systemd       systemd-analyze verify for the .deb's unit
#   strace        the router agent's system calls checked against its unit's SystemCallFilter
#   debootstrap   builds the Debian 12 rootfs of test/router's booted router (hack/debian-rootfs.sh)
#   systemd-container  systemd-nspawn boots it (systemd as PID 1) in the lab router's namespace
#   containerd, runc, containernetworking-plugins
#                 the real-cluster lab's nodes (test/cluster, make demo-real)
set -euo pipefail
PKGS=(iptables nftables iproute2 frr bird2 ferm conntrack tcpdump procps systemd strace git make
  debootstrap systemd-container containerd runc containernetworking-plugins)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all Debian packages present" >&2
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing Debian packages: ${missing[*]} (run as root: sudo $0); tests that need them will fail" >&2
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
# The packaged daemons must not run on the host: tests start their own
# copies inside network namespaces.
for svc in frr bird ferm containerd; do
  systemctl disable --now "$svc" >/dev/null 2>&1 || true
done
