#!/usr/bin/env bash
# kmip-server.sh — a throwaway KMIP key manager for trying and benchmarking ezfs's
# KMIP provider: Debian's PyKMIP server (python3-pykmip) with a fresh CA, a server
# certificate and an ezfs client certificate (ECDSA P-256, made by openssl).
#
#   scripts/kmip-server.sh start DIR [PORT]   make DIR/pki, start the server on
#                                              127.0.0.1:PORT (default 5696) with its
#                                              database in DIR, print the kmip:// URL
#                                              for 'ezfs init --key-provider'
#   scripts/kmip-server.sh stop DIR            kill the server (its whole process group)
#
# Not for production: the keys live in DIR/kms.db, unencrypted, as PyKMIP keeps them.
set -euo pipefail

usage() { sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
[[ $# -ge 2 ]] || usage
cmd=$1 dir=$2 port=${3:-5696}

if [[ $cmd == stop ]]; then
    [[ -f $dir/server.pid ]] || { echo "kmip-server.sh: no server.pid in $dir" >&2; exit 1; }
    kill -KILL -- "-$(cat "$dir/server.pid")" 2>/dev/null || true
    rm -f "$dir/server.pid"
    exit 0
fi
[[ $cmd == start ]] || usage
[[ -x /usr/bin/pykmip-server ]] || { echo "kmip-server.sh: install python3-pykmip" >&2; exit 1; }
command -v openssl >/dev/null || { echo "kmip-server.sh: install openssl" >&2; exit 1; }
mkdir -p "$dir/pki" "$dir/policies"
dir=$(cd "$dir" && pwd)
p=$dir/pki
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
issue() { # stem cn extensions
    key "$p/$1.key"
    openssl req -new -sha256 -subj "/CN=$2" -key "$p/$1.key" -out "$p/$1.csr" 2>/dev/null
    printf '%b' "$3" >"$p/$1.ext"
    openssl x509 -req -sha256 -days 30 -in "$p/$1.csr" -CA "$p/ca.pem" -CAkey "$p/ca.key" \
        -CAcreateserial -extfile "$p/$1.ext" -out "$p/$1.pem" 2>/dev/null
}
if [[ ! -f $p/ca.pem ]]; then
    key "$p/ca.key"
    openssl req -x509 -new -sha256 -days 30 -subj "/CN=ezfs KMIP CA" -key "$p/ca.key" -out "$p/ca.pem" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    issue server localhost 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n'
    issue client ezfs 'extendedKeyUsage=clientAuth\n'
    chmod 600 "$p"/*.key
fi
cat >"$dir/server.conf" <<CONF
[server]
hostname=127.0.0.1
port=$port
certificate_path=$p/server.pem
key_path=$p/server.key
ca_path=$p/ca.pem
auth_suite=TLS1.2
enable_tls_client_auth=True
database_path=$dir/kms.db
policy_path=$dir/policies
logging_level=WARNING
CONF
setsid /usr/bin/python3 /usr/bin/pykmip-server -f "$dir/server.conf" -l "$dir/server.log" \
    </dev/null >"$dir/stdout" 2>&1 &
echo $! >"$dir/server.pid"
for _ in $(seq 1 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "kmip://127.0.0.1:$port?ca=$p/ca.pem&cert=$p/client.pem&key=$p/client.key"
        exit 0
    fi
    sleep 0.1
done
echo "kmip-server.sh: the server did not start; see $dir/server.log and $dir/stdout" >&2
exit 1
