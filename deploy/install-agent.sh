#!/usr/bin/env bash
# Install the rkfarm agent on a Debian/Ubuntu board (aarch64 or any other architecture) as a systemd service.
#
#   sudo ./install-agent.sh                         # rkfarm from PyPI
#   sudo ./install-agent.sh --wheel rkfarm-0.1.0-py3-none-any.whl
#   sudo ./install-agent.sh --uninstall
#
# It installs only the agent's packages (grpcio, protobuf, numpy, onnxruntime, zeroconf, psutil) into
# /opt/rkfarm/venv — never the host-only ones (onnx, converters, quantizers). Safe to run again to upgrade.
set -euo pipefail

PREFIX=/opt/rkfarm
VENV="$PREFIX/venv"
CONF_DIR=/etc/rkfarm
UNIT=/etc/systemd/system/rkfarm-agent.service
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SPEC="rkfarm"

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheel) SPEC="$(realpath "$2")"; shift 2 ;;
    --spec) SPEC="$2"; shift 2 ;;
    --uninstall)
      systemctl disable --now rkfarm-agent 2>/dev/null || true
      rm -f "$UNIT"; systemctl daemon-reload
      echo "rkfarm-agent removed (models kept in /var/lib/rkfarm-agent, settings in $CONF_DIR)"; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install-agent.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

if [[ $EUID -ne 0 ]]; then echo "install-agent.sh: run as root (sudo)" >&2; exit 1; fi
command -v systemctl >/dev/null || { echo "install-agent.sh: needs systemd" >&2; exit 1; }

echo "==> packages"
if ! python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  apt-get update -q
  apt-get install -y -q python3 python3-venv
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "needs Python >= 3.10" >&2; exit 1; }

echo "==> user and folders"
id rkfarm >/dev/null 2>&1 || useradd --system --home-dir /var/lib/rkfarm-agent --shell /usr/sbin/nologin rkfarm
for group in video render; do getent group "$group" >/dev/null && usermod -aG "$group" rkfarm; done
install -d -m 0755 "$PREFIX" "$CONF_DIR"

echo "==> virtual environment $VENV ($SPEC, agent dependencies only)"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet --upgrade "$SPEC"
"$VENV/bin/rkfarm-agent" info

echo "==> configuration"
if [[ ! -f "$CONF_DIR/agent.env" ]]; then
  install -m 0644 "$HERE/agent.env.example" "$CONF_DIR/agent.env"
else
  echo "    keeping existing $CONF_DIR/agent.env"
fi
install -m 0644 "$HERE/rkfarm-agent.service" "$UNIT"

echo "==> service"
systemctl daemon-reload
systemctl enable --now rkfarm-agent
systemctl restart rkfarm-agent
sleep 2
systemctl --no-pager --lines=5 status rkfarm-agent || true
echo "done: from your PC, run 'rkfarm devices' to see this board"
