"""The README's first command in miniature: the embedded default (SQLite + file-system broker), no servers."""

import sys

from tests.integration.conftest import ROOT, clean_env, free_port


def test_demo_runs_a_job_to_success_with_no_servers(tmp_path):
    import subprocess

    env = clean_env(LOCUS_VAR_DIR=str(tmp_path / "var"))
    result = subprocess.run([sys.executable, "manage.py", "demo", "--exit-when-done", "--port", str(free_port()),
                             "--timeout", "180"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "demo job succeeded" in result.stdout
    assert (tmp_path / "var" / "locus.sqlite3").exists()
    mails = list((tmp_path / "var" / "mail").glob("*.log"))
    assert len(mails) == 1 and "succeeded" in mails[0].read_text()
