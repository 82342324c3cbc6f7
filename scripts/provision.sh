#!/usr/bin/env bash
# Installs the Debian packages Cairn's tests need, only when a command is missing.
# Runs as root on Debian 12 (CI and developer machines); `apt-get update` first.
set -euo pipefail

# command → Debian package that provides it
declare -A NEEDS=(
  [qemu-img]=qemu-utils
  [qemu-nbd]=qemu-utils
  [qemu-storage-daemon]=qemu-system-common
  [nbdinfo]=libnbd-bin
  [nbdcopy]=libnbd-bin
  [fincore]=util-linux-extra
  [setpriv]=util-linux   # the CLI's permission tests drop root's capabilities with it
  [prlimit]=util-linux
  [openssl]=openssl
  [strace]=strace       # volume-file checks the open modes of its lock descriptors with it
)

missing=()
for cmd in "${!NEEDS[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEEDS[$cmd]}")
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "provision: all Debian packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "provision: missing ${missing[*]}; run as root or install them with apt-get" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u)
