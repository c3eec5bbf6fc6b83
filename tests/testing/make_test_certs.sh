#!/usr/bin/env bash
# Writes throwaway certificates for the TLS tests into DIR (created):
#   ca.pem                    the cluster CA
#   cluster.pem, cluster.key  issued by it, for every process: server and
#                             client use, names localhost, 127.0.0.1 and
#                             tandem-cluster (the --tls_server_name)
#   other-ca.pem              a second, unrelated CA
#   other.pem, other.key      issued by the second CA (a stranger's client
#                             certificate)
# P-256 keys (fast to make); valid for one day.
set -euo pipefail
dir=${1:?usage: make_test_certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
ec() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }

make_ca() {  # name subject
  ec "$1.key"
  openssl req -x509 -new -key "$1.key" -sha256 -days 1 -subj "/CN=$2" -out "$1.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
issue() {  # name ca subject
  ec "$1.key.ec"
  # gRPC's OpenSSL reads PKCS#8 ("BEGIN PRIVATE KEY") as well as SEC1;
  # PKCS#8 is what cert-manager writes, so the tests use it too.
  openssl pkcs8 -topk8 -nocrypt -in "$1.key.ec" -out "$1.key"
  rm -f "$1.key.ec"
  openssl req -new -key "$1.key" -subj "/CN=$3" -out "$1.csr" 2>/dev/null
  cat >"$1.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:localhost,DNS:tandem-cluster,IP:127.0.0.1
EXT
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days 1 -sha256 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

make_ca ca "tandem test cluster CA"
issue cluster ca "tandem-cluster"
make_ca other-ca "an unrelated CA"
issue other other-ca "stranger"
rm -f ca.srl other-ca.srl
