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
# Two pytest workers, each taking whole test files (so a module's daemon and the session's tokens are
# made once per worker): much of the suite waits on daemons and clients, so two workers on two cores
# took 186 s where one took 314 s (docs/benchmarks.md). SCEPD_TEST_WORKERS=0 runs in one process.
.venv/bin/python -m pytest -n "${SCEPD_TEST_WORKERS:-2}" --dist loadfile "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$rc"
