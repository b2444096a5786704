#!/usr/bin/env bash
# A venv with the `openai` client for tests/serve_openai.rs, made once under
# .cache (from PyPI); prints its python.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.cache/venv-serve
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai' 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'openai==1.*' >&2
fi
echo "$PWD/$venv/bin/python"
