"""The dashboard in Debian's Chromium, driven by Playwright, against a running fleet."""

from __future__ import annotations

import os

import pytest

from common.local import LOOPBACK

pytestmark = pytest.mark.timeout(120)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed (test extra)")


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: apt-get install chromium")
async def test_dashboard_shows_stats_and_japanese(fleet, tmp_path):
    fleet.shard_count = 4
    fleet.extra_env.update({"CF_STATS_INTERVAL_S": "1", "CF_ALERT_INTERVAL_S": "0.5"})
    await fleet.start(workers=2)
    await fleet.add_channels(3, ["stream.online:1"])
    await fleet.wait_ready(subscriptions=3)

    async def stats_settled() -> bool:
        status, body = await fleet.api("/api/stats")
        return status == 200 and body["enabled_shards"] == 4

    await fleet.wait_for(stats_settled, 20, "stats with every shard enabled")
    _, stats = await fleet.api("/api/stats")

    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(locale="en-US", extra_http_headers={"Accept-Language": "en-US,en"})
            await page.goto(f"http://{LOOPBACK}:{fleet.http_port}/")
            await page.wait_for_function("document.getElementById('stat-total').textContent !== '–'", timeout=15_000)

            assert await page.text_content("#stat-total") == str(stats["total_shards"])
            assert await page.text_content("#stat-enabled") == str(stats["enabled_shards"])
            assert await page.text_content("#conduit-id") == stats["conduit_id"]
            assert await page.locator("#shard-grid .cell").count() == stats["total_shards"]
            assert await page.text_content("#migration-state") == (
                "Migration is not running: the legacy WebSocket mode does not exist yet.")

            await page.click("#lang-ja")
            await page.wait_for_function("document.documentElement.lang === 'ja'")

            assert await page.text_content("section#shard-summary h2") == "シャード"
            assert await page.text_content("section#capacity h2") == "容量使用率"
            assert "有効" in await page.text_content("#shard-summary .count.ok")
            await page.screenshot(path=str(tmp_path / "dashboard-ja.png"), full_page=True)
            assert (tmp_path / "dashboard-ja.png").stat().st_size > 0
        finally:
            await browser.close()
