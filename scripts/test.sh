#!/usr/bin/env bash
# The whole test suite: unit tests of every crate and the end-to-end tests, which start a real
# OIDC provider, the real jit-ca and jit binaries, a real sshd on 127.0.0.1 and use the real
# ssh, ssh-keygen and ssh-agent.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prerequisites.sh

# The end-to-end tests run the `jit` binary of the client crate, so build every binary first.
cargo build --workspace --bins --examples
exec cargo test --workspace "$@"
