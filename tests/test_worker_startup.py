"""What a worker (and the Python client) load before their first claim: not the web framework.

aiohttp costs a fresh interpreter ~100 ms to import, and the worker serves no HTTP: issue 15's W2
times a worker from its spawn, so its start-up must not pay for it. The figures are the bench's
(`python -m bench --only w2`: "start-up (spawn -> first claim)"); these tests only keep the import
graph honest, in a fresh interpreter each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def modules_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after running `statement` in the repository."""
    code = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return set(run.stdout.split())


@pytest.mark.parametrize(
    "statement",
    [
        "import worker",  # what `python worker.py` runs before main()
        "from jobline.worker_main import parse_settings; parse_settings([])",
        "from jobline import Client, SyncClient",
    ],
)
def test_the_worker_and_the_client_do_not_import_aiohttp(statement: str) -> None:
    loaded = modules_after(statement)
    assert "jobline.validation" in loaded or "jobline.client" in loaded  # ApiError's users are in
    assert not {name for name in loaded if name == "aiohttp" or name.startswith("aiohttp.")}

