#!/usr/bin/env bash
# Real proxies for the proxy tests, from Debian's packages, on loopback only.
#
#   servers.sh start DIR   # ports come from the environment (see below); writes DIR/pids;
#                          # with WATCH_PID set, stops them all when that process is gone
#   servers.sh stop DIR    # TERM, then KILL, every PID in DIR/pids (checking /proc/PID/comm)
#
# Ports (kernel-chosen by the caller): P_SQUID_OPEN P_SQUID_AUTH P_TINY_OPEN P_TINY_AUTH
# P_SOCKS_OPEN P_SOCKS_AUTH P_SOCKS_V6 (on ::1) P_SQUID_TLS (squid's https_port: TLS to the proxy itself). Credentials: PROXY_USER / PROXY_PASS, and TINY_PASS for tinyproxy,
# whose BasicAuth line cannot hold whitespace, '@' or ':'.
# Also generates DIR/pki/{ca.crt,server.crt,server.key} (a CA and a leaf for localhost,
# 127.0.0.1 and ::1) for the TLS origin the tests start, and DIR/pki/other-ca.crt, a CA that
# signs nothing (trusting only it must fail).
set -euo pipefail

cmd=${1:?usage: servers.sh start|stop DIR}
D=${2:?usage: servers.sh start|stop DIR}

record() { # name pid
  echo "$2 $1" >>"$D/pids"
}

wait_port() { # name pid port [host]
  local i
  for i in $(seq 1 100); do
    if ! kill -0 "$2" 2>/dev/null; then
      echo "$1 (pid $2) exited during start-up; its log:" >&2
      cat "$D/$1.log" >&2 || true
      return 1
    fi
    if (exec 3<>"/dev/tcp/${4:-127.0.0.1}/$3") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "$1 did not listen on port $3 within 5 s" >&2
  return 1
}

alive() { # pid comm -> true when that process (not a zombie, same command) still runs
  [ -r "/proc/$1/stat" ] || return 1
  [ "$(awk '{print $3}' "/proc/$1/stat")" != Z ] || return 1
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]
}

stop() {
  [ -f "$D/pids" ] || return 0
  local pid name i
  while read -r pid name; do
    alive "$pid" "$name" && kill -TERM "$pid" 2>/dev/null || true
  done <"$D/pids"
  while read -r pid name; do
    for i in $(seq 1 60); do alive "$pid" "$name" || break; sleep 0.05; done
    alive "$pid" "$name" && kill -KILL "$pid" 2>/dev/null || true
  done <"$D/pids"
  rm -f "$D/pids"
}

pki() {
  mkdir -p "$D/pki"
  cd "$D/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=volley test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
  printf '%s\n' 'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
    'extendedKeyUsage=serverAuth' 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1' >leaf.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 \
    -extfile leaf.ext 2>/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.crt -days 2 \
    -subj "/CN=volley unrelated CA" -addext "basicConstraints=critical,CA:TRUE" 2>/dev/null
  cd - >/dev/null
}

squid_start() {
  mkdir -p "$D/squid"
  printf '%s:%s\n' "$PROXY_USER" "$(openssl passwd -apr1 "$PROXY_PASS")" >"$D/squid/passwd"
  cat >"$D/squid/squid.conf" <<CONF
http_port 127.0.0.1:$P_SQUID_OPEN name=open
http_port 127.0.0.1:$P_SQUID_AUTH name=auth
https_port 127.0.0.1:$P_SQUID_TLS tls-cert=$D/squid/tls.crt tls-key=$D/squid/tls.key name=tls
pid_filename $D/squid/squid.pid
cache_log $D/squid/cache.log
access_log stdio:$D/squid/access.log
netdb_filename none
coredump_dir $D/squid
cache deny all
cache_mem 8 MB
pinger_enable off
shutdown_lifetime 0 seconds
auth_param basic program /usr/lib/squid/basic_ncsa_auth $D/squid/passwd
auth_param basic children 2 startup=1 idle=1
auth_param basic realm test-proxy
acl openport myportname open tls
acl authed proxy_auth REQUIRED
acl loopback_dst dst 127.0.0.0/8 ::1
http_access deny !loopback_dst
http_access allow localhost openport
http_access allow localhost authed
http_access deny all
CONF
  touch "$D/squid/access.log"
  cp "$D/pki/server.crt" "$D/squid/tls.crt"
  cp "$D/pki/server.key" "$D/squid/tls.key"
  chown -R proxy:proxy "$D/squid"
  squid -N -f "$D/squid/squid.conf" </dev/null >"$D/squid.log" 2>&1 &
  local pid=$!
  record squid "$pid"
  wait_port squid "$pid" "$P_SQUID_OPEN"
  wait_port squid "$pid" "$P_SQUID_AUTH"
  wait_port squid "$pid" "$P_SQUID_TLS"
}

tinyproxy_start() { # name port [auth]
  mkdir -p "$D/tinyproxy"
  {
    printf 'Port %s\nListen 127.0.0.1\nTimeout 60\nMaxClients 100\nAllow 127.0.0.1\n' "$2"
    printf 'DisableViaHeader Yes\nLogLevel Info\n'
    if [ "${3:-}" = auth ]; then printf 'BasicAuth %s %s\n' "$PROXY_USER" "$TINY_PASS"; fi
  } >"$D/tinyproxy/$1.conf"
  tinyproxy -d -c "$D/tinyproxy/$1.conf" </dev/null >"$D/$1.log" 2>&1 &
  local pid=$!
  record tinyproxy "$pid"
  wait_port "$1" "$pid" "$2"
}

microsocks_start() { # name host port [user pass]
  if [ $# -gt 3 ]; then
    microsocks -i "$2" -p "$3" -u "$4" -P "$5" </dev/null >"$D/$1.log" 2>&1 &
  else
    microsocks -i "$2" -p "$3" </dev/null >"$D/$1.log" 2>&1 &
  fi
  local pid=$!
  record microsocks "$pid"
  wait_port "$1" "$pid" "$3" "$2"
}

case "$cmd" in
start)
  mkdir -p "$D"
  chmod 755 "$D"
  # Whatever fails below (set -e, set -u), nothing started so far is left running.
  trap 'rc=$?; if [ "$rc" -ne 0 ]; then stop; fi' EXIT
  pki
  squid_start
  tinyproxy_start tinyproxy-open "$P_TINY_OPEN"
  tinyproxy_start tinyproxy-auth "$P_TINY_AUTH" auth
  microsocks_start socks-open 127.0.0.1 "$P_SOCKS_OPEN"
  microsocks_start socks-auth 127.0.0.1 "$P_SOCKS_AUTH" "$PROXY_USER" "$PROXY_PASS"
  microsocks_start socks-v6 ::1 "$P_SOCKS_V6"
  # If the test process dies without running its teardown (killed, crashed), a watchdog stops
  # the servers within a second. It exits by itself once `stop` has removed DIR/pids.
  if [ -n "${WATCH_PID:-}" ]; then
    (
      while kill -0 "$WATCH_PID" 2>/dev/null && [ -f "$D/pids" ]; do sleep 1; done
      if ! kill -0 "$WATCH_PID" 2>/dev/null; then
        stop
        rm -rf "$D"
      fi
    ) </dev/null >/dev/null 2>&1 &
  fi
  ;;
stop) stop ;;
*)
  echo "unknown command $cmd" >&2
  exit 2
  ;;
esac
