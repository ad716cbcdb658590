#!/usr/bin/env bash
# A short run of every fuzz target (20 s each unless SECONDS is given), starting from seeds made
# here: KRLs written by the real ssh-keygen, the example configuration and policy files in config/, and the request
# bodies in fuzz/seeds/. Stops with the crashing input's path when a target fails.
#
# Usage: fuzz/smoke.sh [SECONDS [TARGET...]]
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Builds without a sanitizer unless
# FUZZ_SANITIZER names one (`address` for the longer runs): the CA forbids unsafe code, and the
# sanitizer build takes several times as long. Some flags cargo-fuzz passes are nightly-only;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-20}"
sanitizer="${FUZZ_SANITIZER:-none}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(krl_parse krl_roundtrip request_decode policy_load)
fi
command -v cargo-fuzz >/dev/null 2>&1 || {
    echo "fuzz: cargo-fuzz is missing; run \`cargo install cargo-fuzz\`" >&2
    exit 1
}
export RUSTC_BOOTSTRAP=1

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in "${targets[@]}"; do
    mkdir -p "$work/seeds/$target" "$work/corpus/$target"
done

# KRLs as OpenSSH writes them: serial lists, ranges, a dense run for bitmaps, key IDs, and
# plain keys by blob and by hash.
ssh-keygen -q -t ed25519 -N '' -C ca -f "$work/ca"
ssh-keygen -q -t ed25519 -N '' -C user -f "$work/user"
printf 'serial: 1\nserial: 5-9\nserial: 4000000000\nid: ada@example.com/g-1/7\n' >"$work/certs.spec"
for serial in $(seq 100 3 1300); do echo "serial: $serial"; done >"$work/dense.spec"
printf 'key: %s\nhash: %s\n' "$(cat "$work/user.pub")" \
    "$(ssh-keygen -l -f "$work/ca.pub" | cut -d' ' -f2)" >"$work/keys.spec"
krl_seeds="$work/seeds/krl_parse"
mkdir -p "$krl_seeds"
ssh-keygen -q -k -z 7 -s "$work/ca.pub" -f "$krl_seeds/certs.krl" "$work/certs.spec"
ssh-keygen -q -k -z 8 -s "$work/ca.pub" -f "$krl_seeds/dense.krl" "$work/dense.spec"
ssh-keygen -q -k -z 9 -f "$krl_seeds/keys.krl" "$work/keys.spec"

mkdir -p "$work/seeds/policy_load" "$work/seeds/request_decode"
# policy_load reads its first byte as the choice of loader: 0 profiles, 1 Cedar, 2 the CA's
# configuration.
{ printf 0; cat ../config/profiles.toml; } >"$work/seeds/policy_load/profiles.toml"
{ printf 1; cat ../config/policy.cedar; } >"$work/seeds/policy_load/policy.cedar"
{ printf 2; cat ../config/jit-ca.toml; } >"$work/seeds/policy_load/jit-ca.toml"
cp seeds/request_decode/* "$work/seeds/request_decode/"

cargo fuzz build --sanitizer "$sanitizer" --debug-assertions
for target in "${targets[@]}"; do
    echo "fuzz: $target for ${seconds}s" >&2
    cargo fuzz run --sanitizer "$sanitizer" --debug-assertions "$target" "$work/corpus/$target" "$work/seeds/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 2>"$work/$target.log" || {
        tail -n 40 "$work/$target.log" >&2
        echo "fuzz: $target failed; the input is under fuzz/artifacts/$target/" >&2
        exit 1
    }
    grep -E '^(stat::number_of_executed_units|stat::new_units_added)' "$work/$target.log" |
        sed "s/^/fuzz: $target /" >&2
done
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a failure" >&2
