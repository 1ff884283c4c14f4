"""The README's first command in miniature: the embedded default (SQLite + file-system broker), no servers."""

import sys

from tests.integration.conftest import ROOT, clean_env, free_port

# Run against the demo's own SQLite database after it stopped: the pipeline's page as its owner sees it.
PAGE_CHECK = """
import json, re
from django.contrib.auth import get_user_model
from django.test import Client
from jobs.models import Job
job = Job.objects.get(pk=JOB_ID)
client = Client(HTTP_HOST="127.0.0.1")
client.force_login(get_user_model().objects.get(username="demo"))
page = client.get(f"/jobs/{job.pk}/").content.decode()
images = {alt: src for src, alt in re.findall(r'<img src="([^"]+)" alt="([^"]+)"', page)}
heads = {alt: b"".join(client.get(src).streaming_content)[:8].hex() for alt, src in images.items()
         if alt in ("render.png", "drift.png")}
qc = page[page.index('id="section-qc"'):]
print(json.dumps({"application": job.application, "entrypoint": job.entrypoint, "status": job.status,
                  "steps": {s.step: [s.status, s.queue] for s in Job.objects.filter(parent=job)},
                  "png_heads": heads, "qc_figures": 'id="qc-figures"' in qc, "qc_frc": "FRC resolution" in qc,
                  "qc_report": "qc.html" in page}))
"""


def test_demo_runs_the_localize_pipeline_to_a_page_with_image_drift_and_qc(tmp_path):
    import json
    import re
    import subprocess

    env = clean_env(LOCUS_VAR_DIR=str(tmp_path / "var"))
    result = subprocess.run([sys.executable, "manage.py", "demo", "--exit-when-done", "--port", str(free_port()),
                             "--timeout", "240"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=360)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "demo pipeline succeeded" in result.stdout
    job_id = re.findall(r"/jobs/([0-9a-f-]{36})/", result.stdout.split("demo pipeline succeeded")[1])[0]
    assert (tmp_path / "var" / "locus.sqlite3").exists()
    mails = list((tmp_path / "var" / "mail").glob("*.log"))
    assert len(mails) == 1 and "succeeded" in mails[0].read_text()  # one email: the pipeline's, not its steps'

    check = subprocess.run([sys.executable, "manage.py", "shell", "-v", "0", "-c",
                            f"JOB_ID = {job_id!r}\n{PAGE_CHECK}"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 0, check.stderr[-3000:]
    seen = json.loads(check.stdout.strip().splitlines()[-1])
    assert (seen["application"], seen["entrypoint"], seen["status"]) == ("pipeline", "localize", "succeeded")
    assert seen["steps"] == {"fit": ["succeeded", "cpu"], "drift": ["succeeded", "cpu"],
                             "render": ["succeeded", "cpu"], "qc": ["succeeded", "cpu"]}  # fit took the CPU route
    png = b"\x89PNG\r\n\x1a\n".hex()
    assert seen["png_heads"] == {"render.png": png, "drift.png": png}  # shown on the page, and real images
    assert seen["qc_figures"] and seen["qc_frc"] and seen["qc_report"]


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
