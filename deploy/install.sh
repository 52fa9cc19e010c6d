#!/usr/bin/env bash
# Install topoipam on a node: a virtual environment of its own under PREFIX, the CNI plugin in the
# CNI bin directory, the shipped conflist, the systemd unit and its environment file.
#
#   deploy/install.sh [--root DIR] [--prefix /opt/topoipam] [--cni-bin-dir /opt/cni/bin]
#                     [--cni-conf-dir /etc/cni/net.d] [--systemd-dir /etc/systemd/system]
#                     [--etc-dir /etc/topoipam] [--socket /run/topoipam/agent.sock]
#                     [--datastore URL] [--node NAME] [--python python3] [--source DIR]
#                     [--extras etcd,metrics] [--no-systemd]
#
# --root DIR puts every default path under DIR (a trial install, a test, an image build): the
# installed files then name their paths under DIR, so they run from there.
# --datastore is written to ETC_DIR/agent.env (TOPOIPAM_DATASTORE); without it the file keeps an
# example and the agent refuses to start until one is set (it never falls back to a local file).
# Needs python3 (3.11+) with venv; installs the exact versions of constraints.txt from the package
# index (or from --find-links/--no-index in PIP_* environment variables). Safe to run again.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root="" prefix="" cni_bin="" cni_conf="" systemd_dir="" etc_dir="" socket=""
datastore="" node="" python=python3 source=$(dirname "$here") extras=etcd,metrics systemd=yes
die() { echo "install.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=${2:?}; shift ;;
    --prefix) prefix=${2:?}; shift ;;
    --cni-bin-dir) cni_bin=${2:?}; shift ;;
    --cni-conf-dir) cni_conf=${2:?}; shift ;;
    --systemd-dir) systemd_dir=${2:?}; shift ;;
    --etc-dir) etc_dir=${2:?}; shift ;;
    --socket) socket=${2:?}; shift ;;
    --datastore) datastore=${2:?}; shift ;;
    --node) node=${2:?}; shift ;;
    --python) python=${2:?}; shift ;;
    --source) source=${2:?}; shift ;;
    --extras) extras=$2; shift ;;
    --no-systemd) systemd=no ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
case "$root" in ""|/*) ;; *) root=$(pwd)/$root ;; esac
root=${root%/}
prefix=${prefix:-$root/opt/topoipam}
cni_bin=${cni_bin:-$root/opt/cni/bin}
cni_conf=${cni_conf:-$root/etc/cni/net.d}
systemd_dir=${systemd_dir:-$root/etc/systemd/system}
etc_dir=${etc_dir:-$root/etc/topoipam}
socket=${socket:-$root/run/topoipam/agent.sock}
[ -f "$source/pyproject.toml" ] || die "--source $source is not a topoipam checkout (no pyproject.toml)"
"$python" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  || die "$python is not Python 3.11+ with venv (Debian: apt-get install python3 python3-venv)"

echo "install.sh: topoipam into $prefix"
[ -x "$prefix/venv/bin/python" ] || "$python" -m venv "$prefix/venv"
spec=$source
[ -n "$extras" ] && spec="$source[$extras]"
"$prefix/venv/bin/python" -m pip install -q --disable-pip-version-check --no-warn-script-location \
  -c "$source/constraints.txt" "$spec"
# The plugin is exec'd once per pod: compile every module now, not on the first pod's start.
"$prefix/venv/bin/python" -m compileall -q "$prefix/venv/lib" >/dev/null

# Edits the shipped files for the chosen paths, and nothing else (JSON through json, not sed).
edit() { "$prefix/venv/bin/python" - "$@"; }

mkdir -p "$cni_bin" "$cni_conf"
# pip's console script runs site and imports re before the plugin starts: replace it by the lean
# launcher (-IS, the venv's own directories; src/topoipam/cni/launcher.py) and its code cache.
"$prefix/venv/bin/topoipam-cni" install-launcher >/dev/null
ln -sfn "$prefix/venv/bin/topoipam-cni" "$cni_bin/topoipam-cni"
edit "$here/cni/10-topoipam.conflist" "$cni_conf/10-topoipam.conflist" "$socket" <<'EOF'
import json, os, sys
shipped, target, socket = sys.argv[1:]
conf = json.load(open(shipped))
for plugin in conf["plugins"]:
    if plugin.get("ipam", {}).get("type") == "topoipam-cni":
        plugin["ipam"]["agent_socket"] = socket
tmp = target + ".tmp"
with open(tmp, "w") as f:
    json.dump(conf, f, indent=2)
    f.write("\n")
os.replace(tmp, target)  # a runtime never reads half a file
EOF
echo "install.sh: CNI plugin $cni_bin/topoipam-cni, network $cni_conf/10-topoipam.conflist"

mkdir -p "$etc_dir"
# agent.env keeps what an earlier run or the operator set; --datastore/--node replace only their line.
edit "$etc_dir/agent.env" "$datastore" "$node" <<'EOF'
import os, sys
path, datastore, node = sys.argv[1:]
lines = open(path).read().splitlines() if os.path.exists(path) else [
    "# topoipam agent settings (read by topoipam-agent.service).",
    "# Required: the datastore every node shares. The agent does not start until it is set.",
    "#TOPOIPAM_DATASTORE=etcds://10.0.0.10:2379,10.0.0.11:2379?ca=/etc/topoipam/etcd-ca.pem&cert=...&key=...",
    "#TOPOIPAM_NODE=kube-node-0   (default: this host's name; must equal the kubelet's node name)",
    "#TOPOIPAM_AGENT_ARGS=--label rack=0",
]
for name, value in (("TOPOIPAM_DATASTORE", datastore), ("TOPOIPAM_NODE", node)):
    if value:
        lines = [line for line in lines if not line.startswith(name + "=")] + [f"{name}={value}"]
fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it may carry etcd credentials
with os.fdopen(fd, "w") as f:
    f.write("\n".join(lines) + "\n")
os.chmod(path + ".tmp", 0o600)
os.replace(path + ".tmp", path)
EOF

if [ "$systemd" = yes ]; then
  mkdir -p "$systemd_dir"
  unit=$systemd_dir/topoipam-agent.service
  edit "$here/systemd/topoipam-agent.service" "$unit" "$prefix" "$etc_dir" "$socket" <<'EOF'
import os, sys
shipped, target, prefix, etc_dir, socket = sys.argv[1:]
text = open(shipped).read()
text = text.replace("/run/topoipam/agent.sock", socket).replace("/opt/topoipam", prefix)
text = text.replace("/etc/topoipam", etc_dir)
if os.path.dirname(socket) != "/run/topoipam":  # the socket's directory must stay writable
    text = text.replace("ReadWritePaths=/run/topoipam", f"ReadWritePaths=/run/topoipam {os.path.dirname(socket)}")
tmp = target + ".tmp"
open(tmp, "w").write(text)
os.replace(tmp, target)
EOF
  if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify "$unit"
  fi
  echo "install.sh: unit $unit; then: systemctl daemon-reload && systemctl enable --now topoipam-agent"
fi
echo "install.sh: done"
