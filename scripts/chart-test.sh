#!/usr/bin/env bash
# Lints and renders the Helm chart with the real Helm library
# (helm-python-sdk, no helm binary needed) and checks the objects.
# Creates its Python venv on first use, outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${RAFTQ_CHART_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/raftq/chart-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import helm_python, yaml' 2>/dev/null; then
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "chart-test: installing python3-venv" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq python3-venv python3-pip
  fi
  echo "chart-test: creating $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'helm-python-sdk>=0.1' 'pyyaml>=6'
fi
"$venv/bin/python" -m unittest discover -s charts/raftq-operator/tests -v
