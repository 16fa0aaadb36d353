#!/usr/bin/env bash
# Install the rkfarm agent on a Debian/Ubuntu board (aarch64 or any other architecture) as a systemd service.
#
#   sudo ./install-agent.sh --wheel rkfarm-0.1.0-py3-none-any.whl
#   sudo ./install-agent.sh                         # the one rkfarm-*.whl beside deploy/ (or in dist/)
#   sudo ./install-agent.sh --spec 'rkfarm @ git+https://...'   # any pip requirement instead of a wheel
#   sudo ./install-agent.sh --token                 # require a bearer token: makes /etc/rkfarm/token
#   sudo ./install-agent.sh --farm-key farm.key     # opens encrypted models (made by `rkfarm keygen` on the PC)
#   sudo ./install-agent.sh --tls-cert agent-b1.pem --tls-key agent-b1.key [--tls-client-ca ca.pem]
#   sudo ./install-agent.sh --uninstall            # the service and /opt/rkfarm; models and /etc/rkfarm stay
#   sudo ./install-agent.sh --no-systemd            # install the unit without enabling/starting it (no systemd)
#   ./install-agent.sh --prefix /tmp/try --no-systemd   # a trial under DIR: no user, no root, nothing else changes
#   --python PATH (default python3, >= 3.10)   --index-url URL (or PIP_INDEX_URL, else index-url in pip.conf;
#   PIP_NO_INDEX skips the check)
# In a chroot or container (an image build), where systemd is not running, the service is enabled, not started.
#
# Secrets (token, TLS key) are installed mode 0600, owned by the rkfarm user the service runs as, and named
# in /etc/rkfarm/agent.env by path only. Make the certificates with `rkfarm-agent certs` (README: Security).
#
# rkfarm is not on PyPI: make the wheel on the PC, in the rkfarm checkout, with
#   python -m pip wheel . --no-deps -w dist        (or: python -m build --wheel)
# and copy it to the board with deploy/ (README: "Put an agent on a board").
# It installs only the agent's packages (grpcio, protobuf, numpy, onnxruntime, zeroconf, psutil, cryptography) into
# /opt/rkfarm/venv — never the host-only ones (onnx, converters, quantizers). Safe to run again to upgrade.
set -euo pipefail

PREFIX=/opt/rkfarm
VENV="$PREFIX/venv"
CONF_DIR=/etc/rkfarm
UNIT=/etc/systemd/system/rkfarm-agent.service
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SPEC=""
TOKEN=0
TLS_CERT="" TLS_KEY="" TLS_CLIENT_CA="" FARM_KEY=""
# PYTHON is set by --python only: a PYTHON left in the environment (make exports its PYTHON=... to every
# command it runs) must not pick the board's interpreter behind the user's back.
DEST="" SYSTEMD=1 PYTHON=python3 OWNER=rkfarm GROUP=rkfarm UNINSTALL=0

fail() { echo "install-agent.sh: $*" >&2; exit 1; }

usage() { sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheel) SPEC="$(realpath "$2")"; shift 2 ;;
    --spec) SPEC="$2"; shift 2 ;;
    --token) TOKEN=1; shift ;;
    --tls-cert) TLS_CERT="$(realpath "$2")"; shift 2 ;;
    --tls-key) TLS_KEY="$(realpath "$2")"; shift 2 ;;
    --tls-client-ca) TLS_CLIENT_CA="$(realpath "$2")"; shift 2 ;;
    --farm-key) FARM_KEY="$(realpath "$2")"; shift 2 ;;
    --no-systemd) SYSTEMD=0; shift ;;
    --prefix) DEST="$(realpath -m "$2")"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --index-url) export PIP_INDEX_URL="$2"; shift 2 ;;
    --uninstall) UNINSTALL=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install-agent.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

if [[ $UNINSTALL -eq 1 ]]; then  # the service and the program; models and settings stay
  if [[ -n "$DEST" ]]; then
    PREFIX="$DEST/opt/rkfarm" CONF_DIR="$DEST/etc/rkfarm" UNIT="$DEST/etc/systemd/system/rkfarm-agent.service"
  else
    [[ $EUID -eq 0 ]] || fail "run as root (sudo) to uninstall, or name the trial folder with --prefix DIR"
    if [[ -d /run/systemd/system ]]; then
      systemctl disable --now rkfarm-agent >/dev/null 2>&1 || true
    elif command -v systemctl >/dev/null; then  # a chroot or image: disabling works offline
      systemctl disable rkfarm-agent >/dev/null 2>&1 || true
    fi
  fi
  rm -f "$UNIT" "$(dirname "$UNIT")/multi-user.target.wants/rkfarm-agent.service"
  rm -rf "$PREFIX"
  if [[ -z "$DEST" && -d /run/systemd/system ]]; then systemctl daemon-reload; fi
  echo "rkfarm-agent removed (models kept in ${DEST}/var/lib/rkfarm-agent, settings in $CONF_DIR)"
  exit 0
fi

if [[ -z "$SPEC" ]]; then  # no --wheel/--spec: the wheel copied beside deploy/, or built into dist/
  shopt -s nullglob
  found=("$HERE"/../rkfarm-*.whl "$HERE"/../dist/rkfarm-*.whl "$PWD"/rkfarm-*.whl)
  shopt -u nullglob
  mapfile -t found < <(for f in "${found[@]}"; do realpath "$f"; done | sort -u)
  if [[ ${#found[@]} -eq 1 ]]; then
    SPEC="${found[0]}"
  elif [[ ${#found[@]} -gt 1 ]]; then
    echo "install-agent.sh: several wheels found (${found[*]}): choose one with --wheel FILE" >&2; exit 2
  else
    echo "install-agent.sh: no rkfarm wheel given or found (rkfarm is not on PyPI)." >&2
    echo "  make it on the PC: python -m pip wheel . --no-deps -w dist   (in the rkfarm checkout)" >&2
    echo "  then: scp -r deploy/ dist/rkfarm-*.whl board:~ && ssh board sudo ./deploy/install-agent.sh" >&2
    exit 2
  fi
fi

if [[ -n "$DEST" ]]; then  # --prefix: everything under DIR, owned by whoever runs this; nothing else changes
  PREFIX="$DEST/opt/rkfarm" VENV="$DEST/opt/rkfarm/venv" CONF_DIR="$DEST/etc/rkfarm"
  UNIT="$DEST/etc/systemd/system/rkfarm-agent.service" SYSTEMD=0 OWNER="$(id -un)" GROUP="$(id -gn)"
elif [[ $EUID -ne 0 ]]; then
  fail "run as root (sudo), or try it under a folder with --prefix DIR"
fi
if [[ $SYSTEMD -eq 1 ]] && ! command -v systemctl >/dev/null; then
  fail "systemctl not found: this installs a systemd service (--no-systemd installs without enabling it)"
fi

echo "==> packages"
# py_version: MAJOR.MINOR of $PYTHON, empty if it does not run
py_version() { "$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true; }
py_ok() { local major minor; IFS=. read -r major minor <<<"$1"; [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] &&
  (( major > 3 || (major == 3 && minor >= 10) )); }
TOO_OLD="-> use Debian 12 / Ubuntu 22.04 or newer, or name a newer interpreter with --python PATH"
found="$(py_version)"
[[ -z "$found" ]] || py_ok "$found" || fail "needs Python >= 3.10; $PYTHON ($(command -v "$PYTHON")) is $found $TOO_OLD"
if [[ -z "$found" ]] || ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
  if [[ -z "$DEST" && "$PYTHON" == python3 ]] && command -v apt-get >/dev/null; then
    log="$(mktemp -t rkfarm-install-apt.XXXXXX.log)"
    echo "    installing python3 python3-venv with apt-get (log: $log)"
    { apt-get update -q && apt-get install -y -q python3 python3-venv; } >"$log" 2>&1 ||
      fail "apt-get could not install python3 python3-venv (log: $log) -> check the network and the apt sources, or install them first"
    found="$(py_version)"
  fi
  [[ -n "$found" ]] || fail "$PYTHON not found: needs Python >= 3.10 (apt-get install python3 python3-venv)"
  py_ok "$found" || fail "needs Python >= 3.10; $PYTHON is $found $TOO_OLD"
  "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || fail "$PYTHON lacks venv/ensurepip (apt-get install python3-venv)"
fi
echo "    $PYTHON $found"

if [[ -n "${PIP_NO_INDEX:-}" ]]; then
  echo "==> package index: PIP_NO_INDEX is set, pip installs from its --find-links only"
else
  # the index pip will use: PIP_INDEX_URL, else index-url from pip's own config files (a board pointed at a
  # mirror by /etc/pip.conf), merged as pip merges them (later files over earlier, [install] over [global]); else PyPI
  if [[ -n "${PIP_INDEX_URL:-}" ]]; then
    INDEX="$PIP_INDEX_URL" FROM=""
  else
    IFS=$'\t' read -r INDEX FROM < <("$PYTHON" - <<'PY'
import configparser, os
home, xdg = os.path.expanduser("~"), os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
dirs = (os.environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":")
files = [os.path.join(d, "pip", "pip.conf") for d in dirs] + ["/etc/pip.conf", os.path.join(home, ".pip", "pip.conf"),
         os.path.join(xdg, "pip", "pip.conf"), os.environ.get("PIP_CONFIG_FILE", "")]
parsed = []
for path in files:
    parser = configparser.RawConfigParser()
    try:
        if path and path != os.devnull and parser.read(path):
            parsed.append((path, parser))
    except configparser.Error:
        pass  # pip itself says what is wrong with it
index, origin = "https://pypi.org/simple", ""
for section in ("global", "install"):  # as pip merges: [global] of every file, then [install] of every file
    for path, parser in parsed:
        for key in ("index-url", "index_url"):
            if parser.has_option(section, key) and parser.get(section, key).strip():
                index, origin = parser.get(section, key).split()[0], path
print(f"{index}\t{origin}")
PY
)
  fi
  echo "==> package index $INDEX${FROM:+ (index-url in $FROM)}"
  # one small page (the pip project's), never the index's list of every project; any HTTP answer means reachable,
  # and so does a certificate the system store cannot verify (pip checks with its own bundle or PIP_CERT)
  why="$("$PYTHON" - "$INDEX" <<'PY' 2>&1
import ssl, sys, urllib.error, urllib.request
url = sys.argv[1].rstrip("/") + "/pip/"
try:
    urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "rkfarm-install-agent"}), timeout=20)
except urllib.error.HTTPError:
    pass
except urllib.error.URLError as exc:
    if not isinstance(exc.reason, ssl.SSLError):
        sys.exit(str(exc.reason))
except (OSError, ValueError) as exc:
    sys.exit(str(exc))
PY
)" || fail "cannot reach the package index $INDEX${FROM:+ (index-url in $FROM)} (${why:-no answer}) -> check the network and proxy (https_proxy), or set PIP_INDEX_URL to a reachable mirror"
fi

echo "==> user and folders"
if [[ -z "$DEST" ]]; then
  id rkfarm >/dev/null 2>&1 || useradd --system --home-dir /var/lib/rkfarm-agent --shell /usr/sbin/nologin rkfarm
  # the service gets these from the user database (video/render open the NPU nodes); groups a system lacks are skipped
  for group in video render; do getent group "$group" >/dev/null && usermod -aG "$group" rkfarm; done
fi
install -d -m 0755 "$PREFIX" "$CONF_DIR" "$(dirname "$UNIT")"

echo "==> virtual environment $VENV ($SPEC, agent dependencies only)"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip || fail "pip could not upgrade itself in $VENV (messages above)"
"$VENV/bin/python" -m pip install --quiet --upgrade "$SPEC" || fail "pip could not install $SPEC (messages above)"
if [[ -f "$SPEC" ]]; then  # a rebuilt wheel of the same version replaces the installed one (its dependencies stay)
  "$VENV/bin/python" -m pip install --quiet --force-reinstall --no-deps "$SPEC" || fail "pip could not reinstall $SPEC"
fi
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
  chown "$OWNER:$GROUP" "$CONF_DIR/token"
  chmod 0600 "$CONF_DIR/token"
  set_env RKFARM_AGENT_TOKEN_FILE "$CONF_DIR/token"
  echo "    hosts need it: copy it with 'sudo cat $CONF_DIR/token' into a 0600 file named by RKFARM_TOKEN_FILE"
  [[ -n "$TLS_CERT" ]] || echo "    without TLS the token crosses the network in clear text: trusted labs only"
fi

if [[ -n "$FARM_KEY" ]]; then
  echo "==> farm key (opens encrypted models)"
  install -m 0600 -o "$OWNER" -g "$GROUP" "$FARM_KEY" "$CONF_DIR/farm.key"
  set_env RKFARM_AGENT_FARM_KEY_FILE "$CONF_DIR/farm.key"
fi

if [[ -n "$TLS_CERT" || -n "$TLS_KEY" || -n "$TLS_CLIENT_CA" ]]; then
  echo "==> TLS"
  [[ -n "$TLS_CERT" && -n "$TLS_KEY" ]] || { echo "install-agent.sh: --tls-cert and --tls-key go together" >&2; exit 2; }
  install -d -m 0750 -o "$(id -un)" -g "$GROUP" "$CONF_DIR/tls"
  install -m 0644 "$TLS_CERT" "$CONF_DIR/tls/agent.pem"
  install -m 0600 -o "$OWNER" -g "$GROUP" "$TLS_KEY" "$CONF_DIR/tls/agent.key"
  set_env RKFARM_AGENT_TLS_CERT "$CONF_DIR/tls/agent.pem"
  set_env RKFARM_AGENT_TLS_KEY "$CONF_DIR/tls/agent.key"
  if [[ -n "$TLS_CLIENT_CA" ]]; then
    install -m 0644 "$TLS_CLIENT_CA" "$CONF_DIR/tls/client-ca.pem"
    set_env RKFARM_AGENT_TLS_CLIENT_CA "$CONF_DIR/tls/client-ca.pem"
  fi
fi

if [[ -z "$DEST" ]] && command -v runuser >/dev/null; then
  echo "==> NPU path (rkfarm-agent doctor, as the service user)"
  runuser -u rkfarm -- "$VENV/bin/rkfarm-agent" doctor || true
fi

echo "==> service"
if [[ $SYSTEMD -eq 0 ]]; then
  echo "    unit in $UNIT, not enabled (--no-systemd); run: $VENV/bin/rkfarm-agent serve (settings: $CONF_DIR/agent.env)"
elif [[ ! -d /run/systemd/system ]]; then  # a chroot, a container, an image being built: enable works offline
  systemctl enable rkfarm-agent
  echo "    systemd is not running here: rkfarm-agent is enabled and starts at the next boot"
else
  systemctl daemon-reload
  systemctl enable --now rkfarm-agent
  systemctl restart rkfarm-agent
  sleep 2
  systemctl --no-pager --lines=5 status rkfarm-agent || true
fi
echo "done: from your PC, run 'rkfarm devices' to see this board"
