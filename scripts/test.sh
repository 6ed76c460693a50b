#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
# Lint, format and types first: cheap, and a failure here is a failure of the suite.
.venv/bin/ruff check scepd tests bench
.venv/bin/ruff format --check scepd tests bench
.venv/bin/mypy
# Bytecode for scepd and the tests, written once here: the suite starts `python -m scepd` about a hundred
# times, and where PYTHONDONTWRITEBYTECODE is set (some CI images) each start would compile every module again.
.venv/bin/python -m compileall -q scepd tests
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$rc"
