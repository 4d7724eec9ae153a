#!/usr/bin/env bash
# Installs the real servers and tools the tests start (Debian packages), only when some are missing:
# a machine that has them all pays one `command -v` per tool, no apt-get at all.
# As root it installs with apt-get; otherwise it stops at once and names what to install.
set -euo pipefail

# "test that proves it is there" "Debian package"
need=(
  "command -v squid" squid
  "command -v tinyproxy" tinyproxy
  "command -v microsocks" microsocks
  "command -v nginx" nginx
  "test -e /usr/lib/nginx/modules/ngx_http_echo_module.so" libnginx-mod-http-echo
  "test -e /usr/lib/nginx/modules/ngx_http_brotli_filter_module.so" libnginx-mod-http-brotli-filter
  "command -v openssl" openssl
  "command -v curl" curl
  "ls /usr/lib/postgresql/*/bin/initdb" postgresql
)

missing=()
for ((i = 0; i < ${#need[@]}; i += 2)); do
  eval "${need[i]}" >/dev/null 2>&1 || missing+=("${need[i + 1]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

install="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "volley's tests need these Debian packages, which are missing: ${missing[*]}" >&2
  echo "Install them as root, then run the tests again:  $install" >&2
  exit 1
fi

echo "installing test servers: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq -o DPkg::Lock::Timeout=600
apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
