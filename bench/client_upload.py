"""Python client upload speed: `locus_client.Locus.upload` (resumable chunks, checksum verified by the server)
against the baseline in the same run, one multipart POST of the whole file with its sha256 (the README's curl).

    python bench/client_upload.py [--sizes-mib 16 64 256] [--repeats 3]

Starts a real portal (gunicorn on production settings, PostgreSQL database `locus_clientbench`, Redis db 11)
on loopback, makes a user with an API token, and uploads random files both ways, each time into a fresh
dataset. Prints the median seconds and MiB/s of each way and their ratio; writes
bench/results/client_upload.json. Needs PostgreSQL and Redis (see .ci/services.sh).
"""

import sys
from pathlib import Path

# bench/platform.py shadows the standard library's `platform`: keep bench/ off the import path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import Stack, reset_database  # noqa: E402
from locus_client import Locus  # noqa: E402

DB_NAME = "locus_clientbench"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/11"
RESULTS = ROOT / "bench" / "results" / "client_upload.json"


def multipart(locus: Locus, dataset_id: str, path: Path) -> dict:
    """The baseline: one request carrying the whole file and its sha256 (hashed first, as a script would)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    with path.open("rb") as fh:
        return locus.request("POST", f"datasets/{dataset_id}/files/", retry=False,
                             files={"file": (path.name, fh)}, data={"sha256": digest.hexdigest()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes-mib", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    import redis

    with tempfile.TemporaryDirectory(prefix="locus-client-bench-") as tmp:
        workdir = Path(tmp)
        portal = Stack(workdir, f"postgres://postgres@127.0.0.1:5432/{DB_NAME}", REDIS, web_workers=2,
                       extra_env={"CACHE_URL": REDIS, "LOCUS_USER_QUOTA_BYTES": str(1 << 40),
                                  "LOCUS_MAX_FILE_BYTES": str(1 << 40)})
        reset_database(ADMIN_URL, DB_NAME)
        redis.Redis.from_url(REDIS).flushdb()
        portal.migrate()
        portal.start_portal()
        rows = []
        try:
            locus = Locus(portal.url, portal.create_user("bench"))
            for mib in args.sizes_mib:
                path = workdir / f"movie-{mib}MiB.tif"
                with path.open("wb") as fh:
                    for _ in range(mib):
                        fh.write(os.urandom(1 << 20))
                times: dict[str, list[float]] = {"multipart": [], "client": []}
                for i in range(args.repeats):
                    for way in ("multipart", "client"):  # alternate, so drift in load hits both alike
                        dataset = locus.create_dataset(f"{way} {mib} MiB #{i}")
                        t0 = time.perf_counter()
                        file = (multipart(locus, dataset["id"], path) if way == "multipart"
                                else locus.upload(dataset["id"], path))
                        times[way].append(time.perf_counter() - t0)
                        assert file["size"] == path.stat().st_size
                path.unlink()
                med = {way: statistics.median(t) for way, t in times.items()}
                rows.append({"size_mib": mib, "repeats": args.repeats,
                             **{f"{way}_s": round(s, 3) for way, s in med.items()},
                             **{f"{way}_mib_s": round(mib / s, 1) for way, s in med.items()},
                             "client_over_multipart": round(med["client"] / med["multipart"], 2),
                             "all_s": {way: [round(t, 3) for t in ts] for way, ts in times.items()}})
        finally:
            portal.down()

    print(f"{'MiB':>6} {'multipart s':>12} {'MiB/s':>7} {'client s':>9} {'MiB/s':>7} {'client/multipart':>17}")
    for r in rows:
        print(f"{r['size_mib']:>6} {r['multipart_s']:>12.2f} {r['multipart_mib_s']:>7.1f} {r['client_s']:>9.2f} "
              f"{r['client_mib_s']:>7.1f} {r['client_over_multipart']:>17.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"bench": "client_upload", "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                    "cpus": os.cpu_count(), "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
