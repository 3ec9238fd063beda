"""The package type-checks: mypy (configured in pyproject.toml) reports no errors."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.timeout(300)
def test_mypy_clean():
    pytest.importorskip("mypy", reason="mypy is in the test extra; not installed here")
    if sys.version_info < (3, 10):
        pytest.skip("mypy checks python_version 3.10 (pyproject.toml) and must itself run on 3.10+ "
                    "to parse apsw's stubs; tox -e lint and the other interpreters run it")
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
