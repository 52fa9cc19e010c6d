#!/usr/bin/env bash
# Sets up everything topoipam and its tests need on a fresh Debian machine:
# system packages (etcd, the reference CNI plugins, iproute2, podman) when running as root,
# and a virtual environment in .venv with topoipam installed in editable mode.
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/bin/etcd ] || need_apt+=(etcd-server)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
command -v ip >/dev/null || need_apt+=(iproute2)
[ -x /usr/bin/time ] || need_apt+=(time)  # GNU time: peak RSS in bench/cni_bench.py
[ -x /usr/bin/chromium ] || need_apt+=(chromium)  # headless screenshots of `ipam map` (tests/test_map.py, bench/map_bench.py)
# A real container runtime for tests/test_deploy.py (podman's CNI backend, runc, a busybox image).
command -v podman >/dev/null || need_apt+=(podman)
command -v runc >/dev/null || need_apt+=(runc)
[ -x /bin/busybox ] || need_apt+=(busybox-static)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)  # systemd-analyze verify of the shipped unit
PY=${PYTHON:-python3}
# Debian splits venv's pip bootstrap out of python3: without it `python3 -m venv` fails.
[ -x .venv/bin/python ] || "$PY" -c "import ensurepip" 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "note: not root, so not installing ${need_apt[*]}; tests that need them will skip" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test,etcd,metrics]'
# Byte-compile our sources: the CNI plugin is exec'd once per pod, and an editable
# install under PYTHONDONTWRITEBYTECODE=1 would otherwise recompile every module on every start.
.venv/bin/python -m compileall -q src >/dev/null
# Replace pip's console script for the plugin by the lean launcher (interpreter started with -IS:
# no site scan, no PYTHON* variables; see src/topoipam/cni/launcher.py). Byte-compiles again and
# writes the code cache. Its interpreter is the host's own python3 when that is the venv's Python
# version, as on a node, where deploy/install.sh makes the venv from the system python3: Debian's
# statically linked build runs a plugin exec in ~25% fewer instructions than a shared-library
# build such as pyenv's (docs/cni-performance.md).
launcher_py=.venv/bin/python
version() { "$1" -c 'import sys; print(sys.version_info[:2])' 2>/dev/null; }
if [ -x /usr/bin/python3 ] && [ "$(version /usr/bin/python3)" = "$(version .venv/bin/python)" ]; then
  launcher_py=/usr/bin/python3
fi
.venv/bin/topoipam-cni install-launcher --python "$launcher_py" >/dev/null
