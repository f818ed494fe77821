"""The page at / of `dtg serve`, in a real headless browser (Debian's chromium, driven by playwright)."""

from __future__ import annotations

import os
import shutil

import pytest

from dtg_cli.client import Client
from tests.servers import Served


def chromium() -> str:
    """The chromium binary: $DTG_CHROMIUM, else `chromium` on PATH. Without one the test is skipped, unless
    DTG_REQUIRE_BROWSER is set (CI sets it, and installs the browser)."""
    path = os.environ.get("DTG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("DTG_REQUIRE_BROWSER"):
            pytest.fail("no chromium binary: apt-get install chromium (or set DTG_CHROMIUM)")
        pytest.skip("no chromium binary: apt-get install chromium")
    return path


def test_the_page_streams_tags_equal_to_the_apis_result(ggufs, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (in the test extra)")
    dart, tipo = ggufs["dart-moe"]["q8_0"], ggufs["tipo"]["q8_0"]
    with Served([dart, tipo]) as server, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), headless=True)
        try:
            context = browser.new_context()
            context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
            page = context.new_page()
            page.goto(server.url + "/")
            page.wait_for_selector("#generate:not([disabled])", timeout=30_000)
            # The model picker lists the served models; TIPO's fields appear for TIPO only.
            assert page.eval_on_selector_all("#model option", "os => os.map(o => o.value)") == [dart.stem, tipo.stem]
            assert page.locator("#opt-identity").count() == 1 and page.locator("#opt-nl").count() == 0
            page.select_option("#model", tipo.stem)
            assert page.locator("#opt-nl").count() == 1 and page.locator("#opt-identity").count() == 0
            page.select_option("#model", dart.stem)

            page.fill("#tags", "1girl, (cat ears:1.2)")
            page.select_option("#opt-rating", "general")
            page.fill("#seed", "11")
            page.fill("#num", "2")
            page.click("#generate")
            page.wait_for_function("document.querySelectorAll('.result[data-record]').length === 2", timeout=60_000)
            page.screenshot(path=str(tmp_path / "page.png"))  # an artefact of the test's own folder, not of the repository

            expected = Client(server.url).generate("1girl, (cat ears:1.2)", model=dart.stem, rating="general", seed=11, num=2)
            shown = page.eval_on_selector_all(
                ".result[data-record]",
                "ds => ds.map(d => ({text: d.querySelector('.text').textContent, streamed: d.dataset.streamed, seed: d.querySelector('.seed').textContent}))",
            )
            shown = sorted(shown, key=lambda r: r["seed"])
            assert [r["text"] for r in shown] == [r["text"] for r in expected]
            assert [r["streamed"] for r in shown] == [r["text"] for r in expected]  # the tags as they streamed in
            assert [r["seed"] for r in shown] == ["seed 11", "seed 12"]

            first = page.locator(".result[data-record]").first
            first.locator("button.copy").click()
            page.wait_for_function("document.querySelector('.result button.copy').textContent === 'copied'", timeout=10_000)
            copied = page.evaluate("navigator.clipboard.readText()")
            assert copied == first.locator(".text").text_content()
            first.locator("button.reuse").click()
            assert page.input_value("#seed") in ("11", "12")

            page.reload()  # the last results stay in the page
            page.wait_for_selector(".result[data-record]", timeout=10_000)
            assert sorted(page.eval_on_selector_all(".result .text", "ts => ts.map(t => t.textContent)")) == sorted(
                r["text"] for r in expected
            )

            # A bad value is the server's one-line message.
            page.click("details summary")  # the sampling settings
            page.fill("#opt-temperature", "500")
            page.click("#generate")
            page.wait_for_function("document.getElementById('status').classList.contains('error')", timeout=10_000)
            assert "temperature" in page.text_content("#status")
        finally:
            browser.close()
