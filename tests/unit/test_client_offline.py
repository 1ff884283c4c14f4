"""The Python client's checks that need no portal: where downloads may land, and its refusals to start."""

import subprocess
import sys

import pytest

from locus_client import Locus, LocusError
from locus_client.api import _relative_parts
from tests.integration.conftest import ROOT, clean_env


@pytest.mark.parametrize(("given", "parts"), [
    ("ch0/locs.csv", ["ch0", "locs.csv"]),
    ("../../etc/passwd", ["etc", "passwd"]),
    ("/abs/./x.tif", ["abs", "x.tif"]),
    ("..\\..\\win.ini", ["win.ini"]),
    ("..", ["file"]),
])
def test_a_server_given_output_path_never_leaves_the_download_folder(given, parts):
    assert _relative_parts(given) == parts


def test_without_url_or_token_it_says_which_is_missing(monkeypatch):
    monkeypatch.delenv("LOCUS_URL", raising=False)
    monkeypatch.delenv("LOCUS_TOKEN", raising=False)
    with pytest.raises(LocusError, match="LOCUS_URL"):
        Locus()
    with pytest.raises(LocusError, match="LOCUS_TOKEN"):
        Locus("http://127.0.0.1:9")


def test_an_unreachable_portal_is_one_line_and_exit_2():
    env = clean_env(LOCUS_URL="http://127.0.0.1:9", LOCUS_TOKEN="x")  # port 9: nothing listens
    done = subprocess.run([sys.executable, "-m", "locus_client", "--retries", "2", "apps"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("locus: error: cannot reach"), done.stderr
    assert done.stderr.count("\n") == 1
