#!/usr/bin/env bash
# Run (as root; `make container-tools`, hence `make test` and .ci/run, runs it):
#   bash container/apptainer-install.sh            # tree in $APPTAINER_TREE, command /usr/local/bin/apptainer
#
# Apptainer for machines WITHOUT one (this CI machine kind). On a real cluster use the site's
# Apptainer; this is not needed there. Debian 12 has no apptainer package; Debian unstable (sid)
# has one (1.4.x) that needs a newer libc, so it is installed from Debian's packages only into a
# sid tree (mmdebstrap), and a host-side command `apptainer` (container/apptainer, copied to
# $APPTAINER_BIN) enters that tree for each call (../shared/notes/apptainer-here.md has the facts).
#
# In the tree, set up once:
#   - apptainer, squashfuse (unprivileged exec mounts the SIF with squashfuse_ll), fuse2fs, fuse3;
#   - apptainer.conf: `root default capabilities = file` (this machine's bounding set lacks
#     CAP_SYS_RESOURCE, which the default `full` requests);
#   - root:1000000:65536 in /etc/subuid and /etc/subgid: root builds a definition file with
#     `--fakeroot`;
#   - the host's extra certificate authorities (pip in %post downloads through a TLS proxy).
#
# Idempotent: a tree whose stamp (.cifar-bench-installed) holds this script's sha256 is kept; the
# wrapper is refreshed every time. Prints the installed version and writes it to
# $APPTAINER_TREE/.cifar-bench-version. About 2 minutes and 500 MB when it builds the tree.
# Environment: APPTAINER_TREE (default /opt/cifar-bench-apptainer), APPTAINER_BIN (default
# /usr/local/bin/apptainer), DEBIAN_MIRROR (default http://deb.debian.org/debian).
# Exit status: 0 installed or already there; 3 the install failed (its own message, "apptainer
# install failed: ..."), so CI tells it apart from a failure of the product; 2 bad usage.
set -euo pipefail
cd "$(dirname "$0")/.."

tree=${APPTAINER_TREE:-/opt/cifar-bench-apptainer}
bin=${APPTAINER_BIN:-/usr/local/bin/apptainer}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=apptainer,squashfuse,fuse2fs,fuse3,ca-certificates
stamp=$tree/.cifar-bench-installed
sum=$(sha256sum "$0" | cut -d' ' -f1)

fail() { echo "apptainer install failed: $1" >&2; exit 3; }

[ "$(id -u)" = 0 ] || { echo "apptainer-install.sh: run as root (it installs into $tree and $bin)" >&2; exit 2; }

if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
    command -v mmdebstrap >/dev/null 2>&1 || {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null 2>&1 \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null; } \
            || fail "cannot install mmdebstrap (apt-get install mmdebstrap)"
    }
    echo "apptainer-install.sh: making a Debian sid tree with $packages in $tree (about 2 minutes)"
    rm -rf "$tree"
    log=$(mktemp)
    # sid's index on a mirror can be past its Valid-Until date; the packages are still signed.
    mmdebstrap --variant=minbase --include="$packages" \
        --aptopt='Acquire::Check-Valid-Until "false"' sid "$tree" "deb $mirror sid main" >"$log" 2>&1 \
        || { tail -n 20 "$log" >&2; rm -f "$log"; fail "mmdebstrap of Debian sid with $packages into $tree (log above)"; }
    rm -f "$log"
    conf=$tree/etc/apptainer/apptainer.conf
    [ -f "$conf" ] || fail "$conf missing after the install"
    sed -i 's/^root default capabilities = .*/root default capabilities = file/' "$conf"
    grep -q '^root:' "$tree/etc/subuid" 2>/dev/null || echo 'root:1000000:65536' >>"$tree/etc/subuid"
    grep -q '^root:' "$tree/etc/subgid" 2>/dev/null || echo 'root:1000000:65536' >>"$tree/etc/subgid"
    # A fuse node every user may open, bound over /dev/fuse by the wrapper (the host's is 0600).
    rm -f "$tree/.fuse" && mknod -m 0666 "$tree/.fuse" c 10 229
    rm -rf "$tree/var/cache/apt/archives/"*.deb "$tree/var/lib/apt/lists/"*
    echo "$sum" >"$stamp"
fi
# The host's extra CAs (every time: the host's may change), then the tree's bundle.
cp /usr/local/share/ca-certificates/*.crt "$tree/usr/local/share/ca-certificates/" 2>/dev/null || true
chroot "$tree" update-ca-certificates >/dev/null 2>&1 || true

sed "s|^TREE=.*|TREE=\${APPTAINER_TREE:-$tree}|" container/apptainer >"$bin.tmp"
chmod 0755 "$bin.tmp" && mv "$bin.tmp" "$bin"
version=$("$bin" --version 2>&1) || fail "the installed apptainer does not run: $version"
echo "$version" >"$tree/.cifar-bench-version"
echo "apptainer-install.sh: $version (Debian sid, in $tree), command $bin"
