#!/usr/bin/env bash
# The crypt-bundle workflow end to end on the host, with the pyrauc CLI only:
# make a PKI, build a crypt bundle, inspect it, encrypt it for three of five devices,
# inspect it as device 0, show that device 1 cannot open it, and extract it.
set -euo pipefail
out=${1:-$(mktemp -d)}
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
cd "$W"
step() { printf '\n== %s\n' "$*"; }
step "PKI: a CA and a signer; five device key pairs (EC P-256) with self-signed certs"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/O=Demo/CN=Demo CA" -keyout ca.key -out ca.pem \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/O=Demo/CN=Demo Signer" -keyout signer.key -out signer.csr 2>/dev/null
openssl x509 -req -in signer.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -out signer.pem 2>/dev/null
for i in 0 1 2 3 4; do
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/O=Demo/CN=device-$i" \
    -keyout dev$i.key -out dev$i.pem 2>/dev/null
done
mkdir content
head -c 1048576 /dev/urandom > content/rootfs.img
printf '[update]\ncompatible=demo\nversion=1.0\n\n[bundle]\nformat=crypt\n\n[image.rootfs]\nfilename=rootfs.img\n' \
  > content/manifest.raucm
step "pyrauc bundle (crypt)"
pyrauc bundle --cert signer.pem --key signer.key content demo.raucb
step "pyrauc info (unencrypted CMS, key hidden)"
pyrauc info --keyring ca.pem demo.raucb
step "pyrauc encrypt for devices 0, 2 and 4"
cat dev0.pem dev2.pem dev4.pem > recipients.pem
pyrauc encrypt --keyring ca.pem --to recipients.pem demo.raucb demo-enc.raucb
step "pyrauc info without a key fails"
if pyrauc info --keyring ca.pem demo-enc.raucb; then echo "unexpected success"; exit 1; fi
step "pyrauc info as device 0, with the recipient list"
pyrauc info --keyring ca.pem --key dev0.key --dump-recipients demo-enc.raucb
step "device 1 is no recipient"
if pyrauc info --keyring ca.pem --key dev1.key demo-enc.raucb; then echo "unexpected success"; exit 1; fi
step "pyrauc extract as device 2"
pyrauc extract --keyring ca.pem --key dev2.key demo-enc.raucb extracted
cmp extracted/rootfs.img content/rootfs.img && echo "extracted rootfs.img is identical"
cp demo.raucb demo-enc.raucb "$out/" 2>/dev/null || true
echo; echo "demo done; bundles in $out"
