#!/bin/sh
# Build the igrun OCI image from Debian 12 packages and igrun's wheel, pulling no base image:
# mmdebstrap makes a minimal root from the Debian archive (python3, libbpf1), pip installs
# the wheel and its dependencies into it, and `podman import` turns the tree into an image
# whose default command is the agent (igrun serve).
#
#   scripts/build-image.sh [IMAGE]          # default localhost/igrun:latest
#
# Needs: root (mmdebstrap into a folder), mmdebstrap, podman, and a Python 3.11 with pip
# ($PYTHON, default python3: Debian 12's Python, so the wheels fit) with igrun's build
# requirements (clang, bpftool, libbpf-dev: see README.md's Development section).
# MIRROR overrides the Debian mirror (default http://deb.debian.org/debian).
set -eu

IMAGE=${1:-localhost/igrun:latest}
PYTHON=${PYTHON:-python3}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SRC=$(cd "$(dirname "$0")/.." && pwd)

for tool in mmdebstrap podman; do
    command -v "$tool" >/dev/null || { echo "build-image: $tool is not installed" >&2; exit 1; }
done
version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$version" = 3.11 ] || { echo "build-image: $PYTHON is $version, Debian 12 has 3.11" >&2; exit 1; }
"$PYTHON" -m pip --version >/dev/null 2>&1 ||
    { echo "build-image: $PYTHON has no pip (PYTHON=.venv/bin/python takes the venv's)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root

# 1. The wheel (the BPF objects and the C extension are built here, not in the image).
"$PYTHON" -m pip wheel -q --no-deps -w "$work/wheels" "$SRC"

# 2. A minimal Debian 12 root: the essential packages, python3, libbpf1 and libstdc++6 (numpy
#    needs it), no docs.
mmdebstrap --quiet --variant=essential --include=python3,libbpf1,libstdc++6 \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$root" "$MIRROR"
rm -rf "$root/var/cache/apt" "$root/var/lib/apt/lists" "$root/var/log"/*

# 3. igrun with the agent extra, where Debian's python3 looks for local packages.
site=$root/usr/local/lib/python3.11/dist-packages
wheel=$(ls "$work"/wheels/igrun-*.whl)
"$PYTHON" -m pip install -q --no-compile --target "$site" "$wheel[agent]"
rm -rf "$site/bin" "$site"/*/tests "$site"/numpy/*/tests
printf '#!/bin/sh\nexec python3 -m igrun.core.cli "$@"\n' > "$root/usr/local/bin/igrun"
chmod 755 "$root/usr/local/bin/igrun"

# 4. The image: the agent by default, on the socket a DaemonSet mounts from the host.
tar -C "$root" -c . | podman import \
    --change 'ENTRYPOINT ["/usr/local/bin/igrun"]' \
    --change 'CMD ["serve", "--listen", "unix:///run/igrun/igrun.sock"]' \
    --change 'ENV PYTHONDONTWRITEBYTECODE=1' \
    --message "igrun from Debian 12 packages and its wheel" - "$IMAGE" >/dev/null
podman image inspect --format '{{.Size}}' "$IMAGE" | awk -v i="$IMAGE" \
    '{ printf "%s: %.0f MB\n", i, $1 / 1000000 }'
