#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60) and prints the
# executions per target. Installs the nightly toolchain and cargo-fuzz if missing.
#   scripts/fuzz.sh [SECONDS]
# A crash stops the script with libFuzzer's report; the input is kept under
# fuzz/artifacts/TARGET/ (reproduce: cargo +nightly fuzz run TARGET FILE).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
SECONDS_PER_TARGET=${1:-60}
TARGETS=(header keystore block_decoder)

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# Seed inputs, so the fuzzer starts from valid structure rather than from nothing.
seed() {
    mkdir -p corpus/header corpus/keystore corpus/block_decoder
    # a well-formed header: magic, version 1, suite 1, 4096-byte blocks, ids, key k1@3,
    # a 60-byte EDEK, zeros up to 4096
    {
        printf 'EZFSENC\0\001\000\001\000\000\020\000\000'
        head -c 32 /dev/zero | tr '\0' '\1'
        printf '\003\000\000\000\002k1'
        head -c 60 /dev/zero | tr '\0' '\7'
        head -c $((4096 - 115)) /dev/zero
    } >corpus/header/valid
    # a keystore as `ezfs init` writes it, with cheap KDF parameters
    cat >corpus/keystore/valid <<'JSON'
{
  "format": 1,
  "kdf": { "algorithm": "argon2id", "m_kib": 8, "t": 1, "p": 1, "salt": "000102030405060708090a0b0c0d0e0f" },
  "master": "000102030405060708090a0b000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f000102030405060708090a0b0c0d0e0f",
  "body": { "keys": { "k1": { "owner": 0, "created": 1, "versions": [ { "version": 1, "created": 1, "sealed": "00" } ] } }, "zones": {} },
  "mac": "000102030405060708090a0b000102030405060708090a0b0c0d0e0f"
}
JSON
    # a read of 8 KiB at 0 over a backing file with one metadata block and a hole
    {
        printf '\000\000\000\000\000\040\000\000'
        head -c 12288 /dev/zero
    } >corpus/block_decoder/hole
}
seed

cargo +nightly fuzz build -O
for t in "${TARGETS[@]}"; do
    log=$(mktemp)
    echo "fuzz: $t for ${SECONDS_PER_TARGET}s"
    if ! cargo +nightly fuzz run -O "$t" -- -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 \
        -max_len=16384 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz: $t FAILED (see fuzz/artifacts/$t/)"
        exit 1
    fi
    execs=$(grep -o 'Done [0-9]* runs' "$log" | tail -n 1 | awk '{ print $2 }')
    echo "fuzz: $t ok: ${execs:-?} executions in ${SECONDS_PER_TARGET}s, corpus $(find "corpus/$t" -type f | wc -l) inputs"
    rm -f "$log"
done
