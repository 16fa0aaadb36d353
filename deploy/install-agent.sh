#!/usr/bin/env bash
# Install the rkfarm agent on a Debian/Ubuntu board (aarch64 or any other architecture) as a systemd service.
#
#   sudo ./install-agent.sh                         # rkfarm from PyPI
#   sudo ./install-agent.sh --wheel rkfarm-0.1.0-py3-none-any.whl
#   sudo ./install-agent.sh --token                 # require a bearer token: makes /etc/rkfarm/token
#   sudo ./install-agent.sh --farm-key farm.key     # opens encrypted models (made by `rkfarm keygen` on the PC)
#   sudo ./install-agent.sh --tls-cert agent-b1.pem --tls-key agent-b1.key [--tls-client-ca ca.pem]
#   sudo ./install-agent.sh --uninstall
#
# Secrets (token, TLS key) are installed mode 0600, owned by the rkfarm user the service runs as, and named
# in /etc/rkfarm/agent.env by path only. Make the certificates with `rkfarm-agent certs` (README: Security).
#
# It installs only the agent's packages (grpcio, protobuf, numpy, onnxruntime, zeroconf, psutil, cryptography) into
# /opt/rkfarm/venv — never the host-only ones (onnx, converters, quantizers). Safe to run again to upgrade.
set -euo pipefail

PREFIX=/opt/rkfarm
VENV="$PREFIX/venv"
CONF_DIR=/etc/rkfarm
UNIT=/etc/systemd/system/rkfarm-agent.service
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SPEC="rkfarm"
TOKEN=0
TLS_CERT="" TLS_KEY="" TLS_CLIENT_CA="" FARM_KEY=""

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheel) SPEC="$(realpath "$2")"; shift 2 ;;
    --spec) SPEC="$2"; shift 2 ;;
    --token) TOKEN=1; shift ;;
    --tls-cert) TLS_CERT="$(realpath "$2")"; shift 2 ;;
    --tls-key) TLS_KEY="$(realpath "$2")"; shift 2 ;;
    --tls-client-ca) TLS_CLIENT_CA="$(realpath "$2")"; shift 2 ;;
    --farm-key) FARM_KEY="$(realpath "$2")"; shift 2 ;;
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

# set_env KEY VALUE: put KEY=VALUE in agent.env (replacing an active or commented-out line).
set_env() {
  local file="$CONF_DIR/agent.env"
  if grep -qE "^#? ?$1=" "$file"; then
    sed -i -E "s|^#? ?$1=.*|$1=$2|" "$file"
  else
    echo "$1=$2" >>"$file"
  fi
}

if [[ $TOKEN -eq 1 ]]; then
  echo "==> access token"
  if [[ ! -s "$CONF_DIR/token" ]]; then
    (umask 077; "$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))' >"$CONF_DIR/token")
  fi
  chown rkfarm:rkfarm "$CONF_DIR/token"
  chmod 0600 "$CONF_DIR/token"
  set_env RKFARM_AGENT_TOKEN_FILE "$CONF_DIR/token"
  echo "    hosts need it: copy it with 'sudo cat $CONF_DIR/token' into a 0600 file named by RKFARM_TOKEN_FILE"
  [[ -n "$TLS_CERT" ]] || echo "    without TLS the token crosses the network in clear text: trusted labs only"
fi

if [[ -n "$FARM_KEY" ]]; then
  echo "==> farm key (opens encrypted models)"
  install -m 0600 -o rkfarm -g rkfarm "$FARM_KEY" "$CONF_DIR/farm.key"
  set_env RKFARM_AGENT_FARM_KEY_FILE "$CONF_DIR/farm.key"
fi

if [[ -n "$TLS_CERT" || -n "$TLS_KEY" || -n "$TLS_CLIENT_CA" ]]; then
  echo "==> TLS"
  [[ -n "$TLS_CERT" && -n "$TLS_KEY" ]] || { echo "install-agent.sh: --tls-cert and --tls-key go together" >&2; exit 2; }
  install -d -m 0750 -o root -g rkfarm "$CONF_DIR/tls"
  install -m 0644 "$TLS_CERT" "$CONF_DIR/tls/agent.pem"
  install -m 0600 -o rkfarm -g rkfarm "$TLS_KEY" "$CONF_DIR/tls/agent.key"
  set_env RKFARM_AGENT_TLS_CERT "$CONF_DIR/tls/agent.pem"
  set_env RKFARM_AGENT_TLS_KEY "$CONF_DIR/tls/agent.key"
  if [[ -n "$TLS_CLIENT_CA" ]]; then
    install -m 0644 "$TLS_CLIENT_CA" "$CONF_DIR/tls/client-ca.pem"
    set_env RKFARM_AGENT_TLS_CLIENT_CA "$CONF_DIR/tls/client-ca.pem"
  fi
fi

echo "==> service"
systemctl daemon-reload
systemctl enable --now rkfarm-agent
systemctl restart rkfarm-agent
sleep 2
systemctl --no-pager --lines=5 status rkfarm-agent || true
echo "done: from your PC, run 'rkfarm devices' to see this board"
