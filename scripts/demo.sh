#!/usr/bin/env bash
# The local end-to-end demo: a real OIDC provider, the CA on its embedded defaults, a throwaway
# sshd on loopback; a demo user logs in, asks for access and logs in over ssh with the issued
# certificate. Every step is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prerequisites.sh

echo "jit-ca demo: building (first build takes a few minutes)" >&2
cargo build --quiet --workspace --bins --examples
exec cargo run --quiet --example demo
