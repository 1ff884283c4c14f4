"""Browser upload speed: Chromium (Debian's, driven by Playwright) uploads files through the portal's dataset
page — chunked resumable upload, sha256 computed in the page while the chunks travel, verification by the
server — timed from choosing the file to "stored, checksum verified" on the page. Prints a table and writes bench/results/portal_upload.json.

Needs a running portal (e.g. `make demo`) and an account on it:

    python bench/portal_upload.py --portal http://127.0.0.1:8000 --user demo --password locus-demo --sizes-mib 16 64 256
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "portal_upload.json"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def measure(page, path: Path, timeout_ms: int) -> dict[str, float]:
    from playwright.sync_api import expect

    t0 = time.monotonic()
    page.set_input_files("#upload-input", str(path))
    state = page.locator("#upload-list li").last.locator(".state")
    expect(state).to_have_text("stored, checksum verified", timeout=timeout_ms)
    return {"total_s": time.monotonic() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portal", default="http://127.0.0.1:8000")
    ap.add_argument("--user", default="demo")
    ap.add_argument("--password", default="locus-demo")
    ap.add_argument("--sizes-mib", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as tmp:
        browser = pw.chromium.launch(executable_path=args.chromium, args=ARGS)
        page = browser.new_page(base_url=args.portal)
        page.goto("/accounts/login/")
        page.fill("#id_username", args.user)
        page.fill("#id_password", args.password)
        page.click("button[type=submit]")
        page.goto("/datasets/")
        page.fill("#id_name", f"upload bench {time.strftime('%Y-%m-%d %H:%M:%S')}")
        page.click("text=Create dataset")
        for mib in args.sizes_mib:
            path = Path(tmp) / f"bench-{mib}MiB.bin"
            with path.open("wb") as fh:
                for _ in range(mib):
                    fh.write(os.urandom(1024 * 1024))
            timing = measure(page, path, timeout_ms=max(120_000, mib * 2000))
            rows.append({"size_mib": mib, **{k: round(v, 2) for k, v in timing.items()},
                         "mib_s": round(mib / timing["total_s"], 1)})
            path.unlink()
        browser.close()

    print(f"{'size (MiB)':>10} {'total s':>8} {'MiB/s':>7}")
    for r in rows:
        print(f"{r['size_mib']:>10} {r['total_s']:>8.2f} {r['mib_s']:>7.1f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"portal": args.portal, "rows": rows,
                                   "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
