#!/usr/bin/env bash
# Install (or upgrade) a headless kai-mesh node on a Raspberry Pi or any Debian-like system.
# Idempotent: run it again after `git pull` to upgrade; an existing node and its keys are kept.
set -euo pipefail

PREFIX=/opt/kai-mesh            # the virtual environment
HOME_DIR=/var/lib/kai-mesh      # the node's config.toml, data and control socket
SERVICE_USER=kai-mesh
UNIT=/etc/systemd/system/kai-mesh.service
WRAPPER=/usr/local/bin/kai-mesh-node

usage() {
    cat <<USAGE
Usage: sudo $0 [--name NAME] [--local-only] [--no-apt] [--no-start]

Installs kai-mesh from this checkout as a systemd service:
  - apt packages python3-venv, python3-pip and git (skipped with --no-apt)
  - a system user '$SERVICE_USER' in group dialout (for RNode serial ports)
  - a virtual environment in $PREFIX with this checkout installed into it
  - a node in $HOME_DIR ('kai-mesh init'), unless one exists there already
  - $UNIT, enabled and (re)started (not started with --no-start)
  - $WRAPPER: runs kai-mesh as '$SERVICE_USER' on that node,
    e.g. 'kai-mesh-node status' or 'kai-mesh-node tui'

Options:
  --name NAME    the node's display name for a new node (default: the host name)
  --local-only   a new node starts with Reticulum off (edit [reticulum] enabled later)
  --no-apt       do not install apt packages
  --no-start     enable the service but do not (re)start it
  -h, --help     show this help
USAGE
}

NAME=""
LOCAL_ONLY=0
APT=1
START=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --name) [[ $# -ge 2 ]] || { echo "--name needs a value" >&2; exit 2; }; NAME="$2"; shift 2 ;;
        --local-only) LOCAL_ONLY=1; shift ;;
        --no-apt) APT=0; shift ;;
        --no-start) START=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { printf '==> %s\n' "$*"; }

if [[ $EUID -ne 0 ]]; then
    echo "run as root: sudo $0 $*" >&2
    exit 1
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [[ ! -f "$REPO/pyproject.toml" ]]; then
    echo "$REPO does not look like a kai-mesh checkout (no pyproject.toml)" >&2
    exit 1
fi

if [[ $APT -eq 1 ]]; then
    missing=()
    for pkg in python3-venv python3-pip git; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        log "installing ${missing[*]}"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    fi
fi

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "kai-mesh needs Python 3.11 or newer; this is $(python3 --version)" >&2
    exit 1
fi
case "$(uname -m)" in
    aarch64|x86_64) ;;
    *) log "warning: $(uname -m) has no PyPI wheels for some dependencies; pip may need a" \
           "compiler. Use the 64-bit Raspberry Pi OS." ;;
esac

if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    log "creating system user $SERVICE_USER"
    useradd --system --user-group --home-dir "$HOME_DIR" --no-create-home \
        --shell /usr/sbin/nologin "$SERVICE_USER"
fi
usermod -a -G dialout "$SERVICE_USER"
install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0700 "$HOME_DIR"

if [[ ! -x "$PREFIX/bin/python" ]]; then
    log "creating virtual environment $PREFIX"
    python3 -m venv "$PREFIX"
fi
log "installing kai-mesh from $REPO into $PREFIX"
"$PREFIX/bin/pip" install --quiet --upgrade pip
# A copy, not an editable install: the service cannot read home directories (ProtectHome).
"$PREFIX/bin/pip" install --quiet --upgrade "$REPO"
install -D -m 0644 "$REPO/hardware/README.md" "$PREFIX/share/doc/kai-mesh/README.md"
install -d -m 0755 "$PREFIX/share/kai-mesh/rnode"
install -m 0644 "$REPO"/hardware/rnode/*.toml "$PREFIX/share/kai-mesh/rnode/"

if [[ -e "$HOME_DIR/data/node.key" ]]; then
    log "keeping the existing node in $HOME_DIR"
else
    log "creating a node in $HOME_DIR"
    init_args=(--home "$HOME_DIR" init)
    [[ -n "$NAME" ]] && init_args+=(--name "$NAME")
    [[ $LOCAL_ONLY -eq 1 ]] && init_args+=(--local-only)
    runuser -u "$SERVICE_USER" -- "$PREFIX/bin/kai-mesh" "${init_args[@]}"
fi

log "installing $WRAPPER"
cat >"$WRAPPER" <<WRAP
#!/bin/sh
# kai-mesh on the node in $HOME_DIR, as its user (written by hardware/pi/install.sh).
if [ "\$(id -un)" = "$SERVICE_USER" ]; then
    exec "$PREFIX/bin/kai-mesh" --home "$HOME_DIR" "\$@"
fi
exec sudo -u "$SERVICE_USER" "$PREFIX/bin/kai-mesh" --home "$HOME_DIR" "\$@"
WRAP
chmod 0755 "$WRAPPER"

log "installing $UNIT"
install -m 0644 "$REPO/hardware/pi/kai-mesh.service" "$UNIT"
systemctl daemon-reload
systemctl enable kai-mesh.service
if [[ $START -eq 1 ]]; then
    systemctl restart kai-mesh.service
    log "started: systemctl status kai-mesh; journalctl -u kai-mesh -f; kai-mesh-node status"
else
    log "enabled, not started: sudo systemctl start kai-mesh"
fi
