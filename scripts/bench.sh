#!/usr/bin/env bash
# The benchmark suite in one command: builds jit-ca and jit-bench in release, builds smallstep
# step-ca 0.19 from Debian's packaged Go sources (offline, GOPATH mode), then runs jit-bench,
# which prints the tables and writes them into BENCHMARKS.md between its markers.
#
#   scripts/bench.sh            full run (a few minutes)
#   scripts/bench.sh --quick    small counts, to check that everything runs
#
# Needs: cargo, ssh-keygen, openssl; for step-ca, the Debian packages golang-go and
# golang-github-smallstep-certificates-dev (apt-get install -y golang-go
# golang-github-smallstep-certificates-dev). Without them step-ca's row says why it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --workspace --bins

# step-ca: Debian ships the packages but no cmd/step-ca, so bench/stepca/main.go calls the
# package's own start command. GOPATH mode resolves every import from /usr/share/gocode.
target_dir="${CARGO_TARGET_DIR:-target}"
step_dir="$target_dir/stepca"
step_ca="$step_dir/step-ca"
gocode=/usr/share/gocode
step_args=()
if ! command -v go >/dev/null; then
    step_args=(--step-ca-unavailable "the Go toolchain is not installed (apt-get install -y golang-go)")
elif [ ! -d "$gocode/src/github.com/smallstep/certificates/commands" ]; then
    step_args=(--step-ca-unavailable "Debian's smallstep sources are not installed (apt-get install -y golang-github-smallstep-certificates-dev)")
else
    mkdir -p "$step_dir/gopath"
    if env -u GOFLAGS GO111MODULE=off GOPATH="$PWD/$step_dir/gopath:$gocode" \
        GOCACHE="$PWD/$step_dir/gocache" go build -o "$step_ca" ./bench/stepca \
        2>"$step_dir/build.log"; then
        step_args=(--step-ca "$step_ca")
    else
        reason="building step-ca failed: $(grep -v '^#\|warning\|note:\|^ \|^In file' "$step_dir/build.log" | head -n 1)"
        step_args=(--step-ca-unavailable "$reason")
    fi
fi

exec "$target_dir/release/jit-bench" \
    --ca-binary "$target_dir/release/jit-ca" \
    "${step_args[@]}" \
    --command "scripts/bench.sh${*:+ $*}" \
    "$@"
