# Sourced by demo.sh and test.sh: makes sure what the demo and the tests run is present.
# Installs what it can (npm packages; OpenSSH and sqlite3 through apt-get when running as root)
# and otherwise stops with one line naming what to install.

need() {
    echo "jit-ca: $1 is missing; $2" >&2
    exit 1
}

apt_install() {
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        need "$1" "install it (Debian/Ubuntu: sudo apt-get install $2)"
    fi
    echo "jit-ca: installing $2 with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null 2>&1 || {
        apt-get update -q >/dev/null 2>&1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null
    }
}

command -v cargo >/dev/null 2>&1 || need cargo "install Rust from https://rustup.rs"
command -v node >/dev/null 2>&1 || apt_install node nodejs
command -v npm >/dev/null 2>&1 || apt_install npm npm
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || need "Node.js 20 or newer" "found $(node --version); install a current Node.js"
[ -x /usr/sbin/sshd ] || apt_install sshd openssh-server
command -v ssh-keygen >/dev/null 2>&1 || apt_install ssh-keygen openssh-client
command -v sqlite3 >/dev/null 2>&1 || apt_install sqlite3 sqlite3
command -v openssl >/dev/null 2>&1 || apt_install openssl openssl

# The test OIDC provider's packages, exactly as the lock file pins them.
oidc_dir="$(dirname "${BASH_SOURCE[0]}")/../tests/oidc"
if [ ! -d "$oidc_dir/node_modules" ] || [ "$oidc_dir/package-lock.json" -nt "$oidc_dir/node_modules" ]; then
    echo "jit-ca: installing the test OIDC provider's npm packages" >&2
    npm ci --prefix "$oidc_dir" --no-audit --no-fund --loglevel=error >/dev/null
    touch "$oidc_dir/node_modules"
fi
