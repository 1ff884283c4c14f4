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


def test_ctrl_c_twice_stops_every_process_without_a_traceback(tmp_path):
    import os
    import signal
    import subprocess
    import time

    env = clean_env(LOCUS_VAR_DIR=str(tmp_path / "var"))
    log = (tmp_path / "demo.log").open("w+")
    demo = subprocess.Popen([sys.executable, "manage.py", "demo", "--port", str(free_port())], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "Locus is running" not in (tmp_path / "demo.log").read_text() and time.monotonic() < deadline:
            assert demo.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
            time.sleep(0.5)
        demo.send_signal(signal.SIGINT)
        time.sleep(0.3)
        demo.send_signal(signal.SIGINT)  # impatient: a second Ctrl-C while it stops
        demo.wait(timeout=60)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    output = (tmp_path / "demo.log").read_text()
    assert "stopping" in output and "Traceback" not in output, output[-3000:]
    alive = subprocess.run(["pgrep", "-f", str(tmp_path / "var")], capture_output=True, text=True).stdout
    assert alive.strip() == ""  # portal, Celery and the agent are gone too
