"""The command line's error boundary: usage errors and library errors exit non-zero without a traceback."""

from __future__ import annotations

import subprocess
import sys

from winback.cli import main


def test_version_runs(capsys):
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip()


def test_unknown_command_exits_nonzero_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "winback.cli", "no-such-command"], capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "No such command" in proc.stderr
