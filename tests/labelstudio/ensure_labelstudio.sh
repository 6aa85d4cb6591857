#!/usr/bin/env bash
# Install the Label Studio server into its own virtualenv (it pins versions of Django REST
# framework, redis-py and others that differ from Redline's), for the integration tests in
# tests/labelstudio/. Idempotent: a venv whose `label-studio` already runs is reused.
#
#   tests/labelstudio/ensure_labelstudio.sh            # installs into .cache/labelstudio-venv
#   LABEL_STUDIO_VENV=/elsewhere tests/labelstudio/ensure_labelstudio.sh
#   LABEL_STUDIO_VERSION=1.20.0 tests/labelstudio/ensure_labelstudio.sh   # pin another version
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${LABEL_STUDIO_VENV:-$ROOT/.cache/labelstudio-venv}"
PYTHON="${PYTHON:-python3.11}"
SPEC="label-studio${LABEL_STUDIO_VERSION:+==$LABEL_STUDIO_VERSION}"

if [[ -x "$VENV/bin/label-studio" ]] && "$VENV/bin/python" -c "import label_studio" 2>/dev/null; then
    echo "Label Studio already installed in $VENV ($("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("label-studio"))'))"
    exit 0
fi

echo "Installing $SPEC into $VENV (a few minutes the first time)"
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "$SPEC"
"$VENV/bin/python" -c "import label_studio" 
echo "Installed $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("label-studio"))') into $VENV"
