"""The report in a real browser (headless Chromium): a phone width and a wide screen.

Playwright drives Debian's Chromium (it cannot download its own browser here); CI installs both.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from report_fixtures import FIXTURE_RECORDS, write_fixture_results

from divekit.report import build_report, collect_results

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path("/tmp")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, int]:
    root = tmp_path_factory.mktemp("report")
    figures = write_fixture_results(root)
    return build_report(collect_results(root), root / "report.html", records=FIXTURE_RECORDS), figures


@pytest.mark.parametrize("width", [420, 1400])
def test_report_reads_well_at_phone_and_desktop_widths(browser, report, width):
    path, figures = report
    page = browser.new_page(viewport={"width": width, "height": 900})
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri(), wait_until="load")

    assert page.evaluate("document.documentElement.scrollWidth") <= page.evaluate("innerWidth")
    images = page.evaluate("""[...document.images].map(i => ({complete: i.complete, natural: i.naturalWidth,
                              right: i.getBoundingClientRect().right}))""")
    assert len(images) == figures
    assert all(i["complete"] and i["natural"] > 0 for i in images), images
    assert all(i["right"] <= width for i in images), images
    # Wide tables scroll inside their own box instead of widening the page.
    boxes = page.evaluate("""[...document.querySelectorAll('.scroll')].map(b => [b.scrollWidth, b.clientWidth,
                             getComputedStyle(b).overflowX])""")
    assert boxes and all(overflow == "auto" for _, _, overflow in boxes)
    if width == 420:
        assert any(scroll > client for scroll, client, _ in boxes), "the 12-column table should scroll here"
    assert page.evaluate("parseFloat(getComputedStyle(document.querySelector('article p:not(.meta)')).fontSize)") >= 14
    aligns = page.evaluate("""[...document.querySelectorAll('#fixture-cnn tbody tr:first-child td')].slice(0, 3)
                              .map(td => getComputedStyle(td).textAlign)""")
    assert aligns == ["left", "right", "right"]
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert errors == []
    page.screenshot(path=str(SCREENSHOTS / f"divekit-report-{width}.png"), full_page=True)
    page.close()
