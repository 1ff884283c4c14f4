"""Hostile files (issue 10 §4): corrupt, truncated and lying inputs, zip bombs, hostile names, and files that
change after their checksum was taken.

Wanted everywhere: a one-line reason naming the file (readers raise BadInput, CLIs exit 2 with one line on
stderr and write nothing, the API answers 4xx with the field), bounded memory, and nothing else affected.
"""

from __future__ import annotations

import hashlib
import io
import os
import resource
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from scipy.io import savemat

from algorithms.cli import BadInput
from algorithms.io.calibration import CalibrationError, read_calibration
from algorithms.io.formats import read_table
from algorithms.io.frames import MAX_FRAME_PIXELS, open_movie

ROOT = Path(__file__).resolve().parents[2]
ONE_LINE = "one line, no traceback"


# -- hostile files, made on the spot ---------------------------------------------------------------------------
def claimed_size_tiff(path: Path, width: int = 100_000, height: int = 100_000, *, full: bool = False) -> Path:
    """A classic TIFF whose one IFD claims width × height 16-bit pixels in one strip.

    `full=False`: the file is 1 KB (the header lies about what follows). `full=True`: a sparse file as long as
    the header says (20 GB, no disk used), so only a size limit can refuse it.
    """
    nbytes = width * height * 2
    entries = [(256, 4, width), (257, 4, height), (258, 3, 16), (259, 3, 1), (262, 3, 1), (273, 4, 512),
               (277, 3, 1), (278, 4, height), (279, 4, nbytes & 0xFFFFFFFF)]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        ifd += struct.pack("<HHII", tag, kind, 1, value) if kind == 4 else struct.pack("<HHIHH", tag, kind, 1, value, 0)
    data = b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)
    with open(path, "wb") as fh:
        fh.write(data.ljust(512 + 1024, b"\x00"))
        if full:
            fh.truncate(512 + nbytes)
    return path


def zip_bomb(path: Path, inflated_bytes: int = 256 * 1024 * 1024) -> Path:
    """A small zip (~250 KB) that inflates to `inflated_bytes` of zeros."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf, zf.open("zeros.bin", "w",
                                                                                          force_zip64=True) as fh:
        block = bytes(1 << 20)
        for _ in range(inflated_bytes >> 20):
            fh.write(block)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    out: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        (d / name).write_bytes(data)
        out[name] = d / name

    tifffile.imwrite(d / "good.tif", rng.integers(0, 1000, (6, 32, 32), dtype=np.uint16))
    good = (d / "good.tif").read_bytes()
    put("truncated.tif", good[: len(good) // 2])
    put("corrupt.tif", rng.bytes(4096))
    put("corrupt-ifd.tif", good[:8] + rng.bytes(len(good) - 8))
    out["claims-100k.tif"] = claimed_size_tiff(d / "claims-100k.tif")
    out["claims-100k-sparse.tif"] = claimed_size_tiff(d / "claims-100k-sparse.tif", full=True)

    with h5py.File(d / "good.h5", "w") as f:
        f.create_dataset("locs", data=rng.random((200, 3)))
    good = (d / "good.h5").read_bytes()
    put("truncated.h5", good[: len(good) // 2])
    put("corrupt.h5", b"\x89HDF\r\n\x1a\n" + rng.bytes(2048))

    savemat(d / "good.mat", {"x": rng.random((50, 3))})
    good = (d / "good.mat").read_bytes()
    put("truncated.mat", good[: len(good) // 2])
    put("corrupt.mat", good[:128] + rng.bytes(512))

    put("corrupt.csv", rng.bytes(3000))
    put("truncated.csv", b"frame,x [nm],y [nm],intensity [photon]\n1,100.5,200.25,3000\n2,10")
    put("not-a-table.csv", b"hello\nworld\n")
    bomb = zip_bomb(d / "bomb.zip").read_bytes()
    for suffix in (".zip", ".csv", ".h5", ".tif", ".mat"):
        put(f"bomb{suffix}", bomb)
    return out


def assert_one_line(exc: BaseException, name: str) -> None:
    text = str(exc)
    assert "\n" not in text and name in text and len(text) < 500, text


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- readers ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["truncated.tif", "corrupt.tif", "corrupt-ifd.tif", "claims-100k.tif",
                                  "claims-100k-sparse.tif", "bomb.tif"])
def test_movie_reader_refuses_bad_tiffs_in_one_line_without_reading_them(files, name, capfd):
    before = peak_rss_mb()
    with pytest.raises(BadInput) as info, open_movie(files[name]) as movie:
        movie.block(0, len(movie))
    assert_one_line(info.value, name)
    assert peak_rss_mb() - before < 200  # nothing of the claimed 20 GB was allocated
    assert capfd.readouterr().err == ""  # tifffile's own complaints stay off stderr


def test_a_frame_larger_than_any_camera_is_refused_with_the_limit(files):
    with pytest.raises(BadInput, match=r"100000 × 100000 px.*at most"):
        open_movie(files["claims-100k-sparse.tif"])
    assert MAX_FRAME_PIXELS < 100_000 * 100_000


@pytest.mark.parametrize("name", ["truncated.tif", "corrupt.tif", "claims-100k.tif", "claims-100k-sparse.tif",
                                  "truncated.h5", "corrupt.h5", "truncated.mat", "corrupt.mat", "bomb.h5",
                                  "bomb.mat", "bomb.tif"])
def test_calibration_reader_refuses_bad_files_in_one_line(files, name, capfd):
    before = peak_rss_mb()
    with pytest.raises((CalibrationError, BadInput)) as info:
        read_calibration(files[name])
    assert_one_line(info.value, name)
    assert peak_rss_mb() - before < 200
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("name", ["truncated.h5", "corrupt.h5", "truncated.mat", "corrupt.mat", "corrupt.csv",
                                  "truncated.csv", "not-a-table.csv", "bomb.csv", "bomb.h5", "bomb.zip"])
def test_table_reader_refuses_bad_files_in_one_line(files, name):
    before = peak_rss_mb()
    with pytest.raises(BadInput) as info:
        read_table(files[name])
    assert_one_line(info.value, name)
    assert peak_rss_mb() - before < 200  # the bomb is never inflated


def test_decode_plex_movie_reader_refuses_a_lying_header(files):
    from algorithms.decode_plex.fit import Movie

    for name in ("claims-100k.tif", "claims-100k-sparse.tif", "truncated.tif"):
        with pytest.raises(ValueError) as info:
            Movie([files[name]])
        assert_one_line(info.value, name)


def test_decode_plex_refuses_a_model_file_that_would_run_code(tmp_path):
    """torch.load unpickles; a model file is user input, so only tensors and plain data may load."""
    import pickle

    import torch

    from algorithms.decode_plex.train import load_model

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "x", "weights": {}, "evil": Payload()}, tmp_path / "model.pt", pickle_module=pickle)
    with pytest.raises(ValueError, match="not a DECODE-Plex model file"):
        load_model(tmp_path / "model.pt")
    assert not marker.exists()


# -- CLIs: exit 2, one line on stderr, no output written -----------------------------------------------------------
CLI_CASES = [
    ("algorithms.io", "convert", "table", "truncated.h5", {"to": "locus"}),
    ("algorithms.io", "convert", "table", "corrupt.mat", {"to": "locus"}),
    ("algorithms.io", "convert", "table", "truncated.csv", {"to": "locus"}),
    ("algorithms.render", "render", "table", "corrupt.csv", {}),
    ("algorithms.render", "render", "table", "bomb.h5", {}),
    ("algorithms.simulation", "simulate", "calibration", "truncated.tif", {"n_frames": 2}),
    ("algorithms.simulation", "simulate", "calibration", "claims-100k-sparse.tif", {"n_frames": 2}),
    ("algorithms.simulation", "simulate", "calibration", "truncated.mat", {"n_frames": 2}),
    ("algorithms.decode_plex", "fit", "model", "corrupt.mat", {}),
]


@pytest.mark.parametrize(("module", "entry", "slot", "name", "params"), CLI_CASES,
                         ids=[f"{c[0].split('.')[-1]}-{c[3]}" for c in CLI_CASES])
def test_cli_turns_bad_input_into_one_line_and_exit_2(files, tmp_path, module, entry, slot, name, params):
    import json

    inputs, outputs = tmp_path / "in", tmp_path / "out"
    (inputs / slot).mkdir(parents=True)
    outputs.mkdir()
    os.symlink(files[name], inputs / slot / name)  # the sparse 20 GB file is not copied
    (tmp_path / "params.json").write_text(json.dumps(params))
    done = subprocess.run([sys.executable, "-m", module, entry, "--inputs", str(inputs), "--outputs", str(outputs),
                           "--params", str(tmp_path / "params.json")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    assert list(outputs.iterdir()) == []  # never a half-written output


def test_decode_plex_fit_refuses_bad_frames_with_a_real_model(files, tmp_path):
    """The frames are read after the model: this needs a real (tiny) model file to get that far."""
    import json

    model_dir = tmp_path / "model"
    done = subprocess.run([sys.executable, "-c", TINY_MODEL, str(model_dir)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for name in ("claims-100k.tif", "truncated.tif", "corrupt.tif"):
        inputs, outputs = tmp_path / name / "in", tmp_path / name / "out"
        (inputs / "model").mkdir(parents=True)
        (inputs / "frames").mkdir()
        outputs.mkdir()
        (inputs / "model" / "model.pt").write_bytes((model_dir / "model.pt").read_bytes())
        (inputs / "frames" / name).write_bytes(files[name].read_bytes())
        (tmp_path / "params.json").write_text(json.dumps({}))
        done = subprocess.run([sys.executable, "-m", "algorithms.decode_plex", "fit", "--inputs", str(inputs),
                               "--outputs", str(outputs), "--params", str(tmp_path / "params.json")], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and name in lines[0], done.stderr
        assert list(outputs.iterdir()) == []


TINY_MODEL = """
import sys
from pathlib import Path
from algorithms.decode_plex.samples import SampleConfig, sample_batch
from algorithms.decode_plex.train import TrainConfig, train
toy = SampleConfig(frame_size=(32, 32), photons=(2000.0, 6000.0), bg=(20.0, 50.0))
tc = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, lr=3e-3, schedule="cosine", val_samples=2, seed=0)
train(toy.model_config(features=4, depth=2), tc, lambda b, s: sample_batch(toy, b, s), Path(sys.argv[1]),
      report=lambda *a, **k: None, extra={"camera": {"baseline": 100.0, "e_per_adu": 0.5},
                                          "simulation": toy.to_dict()})
"""


# -- the API: names, zips, checksums ---------------------------------------------------------------------------
HOSTILE_NAMES = [
    "../../../../etc/passwd.csv",
    "..\\..\\windows\\system32\\x.csv",
    "a\x00b.csv",
    "x" * 300 + ".csv",
    "Zellkern_μm_日本語_😀.tif",
    "e\u0301.csv",  # NFD: normalised to one code point
    "report\u202egpj.exe",  # right-to-left override: shows as "reportexe.jpg"
    ".hidden",
    "..",
]


@pytest.mark.django_db
@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_hostile_upload_names_are_sanitised_and_stay_in_the_users_folder(api, user, dataset, settings, name):
    from jobs.models import File
    from tests.conftest import upload

    data = b"frame,x [nm],y [nm]\n0,1,2\n"
    response = upload(api, dataset.pk, name, data)
    if response.status_code == 400:  # refusing is fine too, with the field and a reason
        assert "file" in response.json()["error"]["fields"], response.content
        return
    assert response.status_code == 201, response.content
    file = File.objects.get(pk=response.json()["id"])
    assert file.key.startswith(f"users/{user.pk}/datasets/{dataset.pk}/")
    for bad in ("/", "\\", "\x00", "\u202e", ".."):
        assert bad not in file.name
    assert not file.name.startswith(".") and 0 < len(file.name) <= 150 and file.name.isprintable()
    stored = (Path(settings.MEDIA_ROOT) / file.key).resolve()
    assert stored.is_relative_to(Path(settings.MEDIA_ROOT).resolve() / "users" / str(user.pk))
    assert stored.read_bytes() == data and file.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.django_db
def test_worker_output_names_cannot_escape_the_attempts_folder(api, user, worker):
    job = api.post("/api/v1/jobs/", {"application": "diagnostics", "entrypoint": "selftest", "params": {}},
                   format="json").json()["id"]
    claim = worker.post(f"/api/v1/worker/jobs/{job}/claim").json()
    for name in ("../../../other/job/report.json", "/etc/passwd", "a\x00b", "x" * 300):
        response = worker.post(f"/api/v1/worker/attempts/{claim['attempt_id']}/outputs",
                               {"name": name, "size": 1, "sha256": "0" * 64}, format="json",
                               HTTP_X_FENCING_TOKEN=claim["fencing_token"])
        if response.status_code == 400:
            continue
        assert response.status_code == 201, response.content
        key = response.json()["key"]
        assert key.startswith(f"users/{user.pk}/jobs/{job}/attempt-1/"), key
        assert ".." not in key and "\x00" not in key and len(key.rsplit("/", 1)[-1]) <= 150


@pytest.mark.django_db
def test_a_zip_is_refused_by_every_entrypoint_that_reads_content(api, dataset, files):
    """No endpoint or reader unpacks archives: a zip (bomb) is stored as the bytes it is, and submitting it
    where a table, movie or calibration is expected is a 400 naming the slot and the suffixes it takes."""
    from tests.conftest import upload

    bomb = files["bomb.zip"].read_bytes()
    response = upload(api, dataset.pk, "bomb.zip", bomb)
    assert response.status_code == 201 and response.json()["size"] == len(bomb)  # stored as is, not inflated
    file_id = response.json()["id"]
    for application, entrypoint, slot in [("io", "convert", "table"), ("render", "render", "table"),
                                          ("simulation", "simulate", "calibration")]:
        response = api.post("/api/v1/jobs/", {"application": application, "entrypoint": entrypoint,
                                              "params": {}, "inputs": {slot: [file_id]}}, format="json")
        assert response.status_code == 400, response.content
        reasons = [str(v) for k, v in response.json()["error"]["fields"].items() if slot in k]
        assert reasons and "must end with" in reasons[0], response.content
        assert ".zip" not in reasons[0].split("must end with", 1)[1]  # the accepted suffixes exclude zip


@pytest.mark.django_db
def test_upload_whose_bytes_changed_from_the_announced_checksum_is_400_and_leaves_nothing(api, user, dataset,
                                                                                         settings):
    """A file edited while it was uploading: the bytes that arrive are not those the client hashed."""
    from jobs import services
    from jobs.models import File

    announced = hashlib.sha256(b"the file as it was").hexdigest()
    before = services.used_bytes(user)
    fh = io.BytesIO(b"the file as it is now, longer")
    fh.name = "table.csv"
    response = api.post(f"/api/v1/datasets/{dataset.pk}/files/", {"file": fh, "sha256": announced},
                        format="multipart")
    assert response.status_code == 400
    assert "checksum mismatch" in response.json()["error"]["fields"]["sha256"]
    assert not File.objects.filter(dataset=dataset).exists() and services.used_bytes(user) == before
    assert not list((Path(settings.MEDIA_ROOT) / f"users/{user.pk}/datasets/{dataset.pk}").glob("*"))



@pytest.mark.django_db
def test_outputs_in_sub_folders_with_the_same_name_do_not_overwrite_each_other(api, worker):
    """`ch0/locs.csv` and `ch1/locs.csv` once mapped to one storage key: the second upload replaced the first
    and `complete` was refused (checksum mismatch), so such a job could never succeed."""
    from jobs.models import File
    from tests.unit.test_worker_api import call, claim, new_job, put_output

    job = new_job(api)
    body = claim(worker, job).json()
    first, second = put_output(body, worker, "ch0/locs.csv", b"a"), put_output(body, worker, "ch1/locs.csv", b"bb")
    assert first["key"] != second["key"] and first["key"].endswith("/attempt-1/ch0/locs.csv")
    response = call(worker, body, "complete", {"exit_code": 0, "outputs": [first, second]})
    assert response.status_code == 200 and response.json()["job_status"] == "succeeded", response.content
    assert sorted(File.objects.filter(job_id=job).values_list("size", flat=True)) == [1, 2]
