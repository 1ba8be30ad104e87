#!/usr/bin/env bash
# Install everything igrun needs on Debian 12 (as root), build it into .venv, and show it
# working: `igrun trace exec --host` printing the programs this script starts.
#   scripts/install.sh            install, then the demo
#   scripts/install.sh --no-demo  install only (CI)
set -euo pipefail
cd "$(dirname "$0")/.."

demo=1
[ "${1:-}" = "--no-demo" ] && demo=0

if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (igrun loads BPF programs)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -o DPkg::Lock::Timeout=600 -q "$@"; }
apt_get update >/dev/null
apt_get install -y --no-install-recommends \
    python3 python3-venv python3-dev gcc make pkg-config \
    clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev \
    podman runc crun busybox-static containerd docker.io nftables iproute2 \
    libbpf-tools zsh fish openssl jq mmdebstrap \
    >/dev/null  # real containers and network namespaces for the tests; execsnoop for the bench;
                # the shells whose completion scripts the tests run; mmdebstrap for the image

# A real Prometheus for the tests that it scrapes igrun (they start their own, on a free
# port). Debian's package would start its own service on :9090: a policy-rc.d that refuses
# starts keeps it off while it installs (where none is there already), and it is disabled
# for the next boot.
if ! dpkg-query -W -f='${Status}' prometheus 2>/dev/null | grep -q 'ok installed'; then
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && made_policy=1
    fi
    apt_get install -y --no-install-recommends prometheus >/dev/null || rc=$?
    [ "$made_policy" = 1 ] && rm -f "$policy"
    [ "${rc:-0}" = 0 ] || exit "$rc"
    if [ -d /run/systemd/system ]; then
        systemctl disable prometheus.service >/dev/null 2>&1 || true
    else
        update-rc.d prometheus disable >/dev/null 2>&1 || true
    fi
fi

# The kernel file systems gadgets need.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true

python3 -m venv .venv
log=$(mktemp)
if ! { .venv/bin/python -m pip install --upgrade pip setuptools wheel &&
       .venv/bin/python -m pip install -e '.[dev]' --config-settings editable_mode=strict; } \
       >"$log" 2>&1; then
    cat "$log" >&2
    echo "install.sh: building igrun failed (output above)" >&2
    exit 1
fi
rm -f "$log"
# Byte-compile igrun as a wheel install would (an editable one does not): starts stay fast even
# where PYTHONDONTWRITEBYTECODE is set.
.venv/bin/python - <<'PY'
import compileall, igrun
for folder in igrun.__path__:
    compileall.compile_dir(folder, quiet=1)
PY
echo "installed: $(.venv/bin/igrun --version) in .venv (run .venv/bin/igrun, or activate .venv)"

if [ "$demo" = 1 ]; then
    echo "demo: .venv/bin/igrun trace exec --host --timeout 3s (while this script starts a few programs)"
    ( sleep 1.5; /bin/echo "hello from igrun" >/dev/null; ls / >/dev/null; uname -r >/dev/null ) &
    .venv/bin/igrun trace exec --host --timeout 3s
    wait
fi
