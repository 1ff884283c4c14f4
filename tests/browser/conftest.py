"""A real browser on the live portal: Debian's Chromium driven by Playwright (never a browser download),
with the integration suite's real parts behind it (PostgreSQL, Redis, a worker agent, the portal's Celery
worker and an SMTP server)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import NoReturn

import pytest

from tests.integration.conftest import (  # noqa: F401 - fixtures shared with the integration suite
    broker,
    portal,
    portal_celery,
    processes,
    smtp_server,
    start_agent,
    wait_until,
)

CHROMIUM = os.environ.get("LOCUS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# The README's screenshots are refreshed only on request (LOCUS_SCREENSHOTS=1), so that a test run leaves the
# working tree as it found it; otherwise they go to a temporary folder (still taken: the code path is the same).
SCREENSHOTS = (Path(__file__).resolve().parents[2] / "docs" / "screenshots" if os.environ.get("LOCUS_SCREENSHOTS")
               else Path(tempfile.mkdtemp(prefix="locus-screenshots-")))


def unavailable(reason: str) -> NoReturn:
    """Skip for want of a tool, except under LOCUS_REQUIRE_ALL=1 (CI, `.ci/run`): there a missing browser
    fails the run, so a suite that tested nothing cannot pass as green."""
    if os.environ.get("LOCUS_REQUIRE_ALL") == "1":
        pytest.fail(f"LOCUS_REQUIRE_ALL=1 and {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser():
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/services.sh does it as root)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread; the test's own ORM calls are still
    # synchronous, so Django's guard against ORM calls from async code does not apply to them.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# Chromium tells a page what its Content-Security-Policy refused through this event (and the console).
REPORT_CSP_VIOLATIONS = """document.addEventListener("securitypolicyviolation", (e) => window.__locusCspViolation(
  `${e.effectiveDirective} refused ${e.blockedURI || "inline"} at ${e.sourceFile || document.URL}:${e.lineNumber}`));"""


@pytest.fixture
def csp_violations() -> list[str]:
    """What the portal's Content-Security-Policy refused in any page of the test; new_page fails the test
    if anything was (every browser test is a check that the pages work under the policy)."""
    return []


@pytest.fixture
def new_page(browser, portal, csp_violations):  # noqa: F811 - the imported fixture, requested by name
    """Pages in fresh browser contexts (one per user: cookies are not shared), closed after the test."""
    contexts = []

    def make():
        context = browser.new_context(base_url=portal, viewport={"width": 1280, "height": 860},
                                      accept_downloads=True)
        context.set_default_timeout(30_000)
        context.expose_binding("__locusCspViolation", lambda source, text: csp_violations.append(text))
        context.add_init_script(REPORT_CSP_VIOLATIONS)
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda message: "Content Security Policy" in message.text
                and csp_violations.append(message.text))
        return page

    yield make
    for context in contexts:
        context.close()
    assert csp_violations == [], f"the Content-Security-Policy refused: {csp_violations}"


@pytest.fixture
def page(new_page):
    return new_page()


def shoot(page, name: str) -> None:
    """A screenshot of the page for docs/screenshots/ (shown in the README)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def log_in(page, username: str, password: str) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")


def choose_files(page, selector: str, *paths: Path | str) -> None:
    """Pick files in a file input once the page's scripts have run: the scripts sit at the end of the body, so
    a heading can be visible before the input's listener exists, and a file chosen then is never uploaded."""
    page.wait_for_load_state("load")
    page.set_input_files(selector, [str(p) for p in paths])
