"""The dashboard in Debian's Chromium, driven by Playwright, against a running fleet."""

from __future__ import annotations

import os

import orjson
import pytest

from common.local import LOOPBACK

pytestmark = pytest.mark.timeout(120)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TOKEN = "dashboard-test-token"
LEGACY_IDS = ["2000", "2001"]

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed (test extra)")


async def start_fleet_with_rollback(fleet) -> None:
    """Run 3 conduit channels and 2 legacy ones that a manual rollback moved from both back to websocket."""
    fleet.shard_count = 4
    fleet.extra_env.update({"CF_STATS_INTERVAL_S": "1", "CF_ALERT_INTERVAL_S": "0.5", "CF_API_TOKEN": TOKEN})
    await fleet.start_emulator()
    await fleet.use_legacy_user(LEGACY_IDS)
    fleet.start_coordinator()
    fleet.start_worker("worker-1")
    fleet.start_worker("worker-2")
    await fleet.add_channels(3, ["stream.online:1"])
    await fleet.add_channels(len(LEGACY_IDS), ["stream.online:1"], first_id=int(LEGACY_IDS[0]), mode="both")
    await fleet.wait_ready(subscriptions=3)

    url = f"http://{LOOPBACK}:{fleet.http_port}/api/migration/rollback"
    async with fleet.http.post(url, headers={"Authorization": f"Bearer {TOKEN}"}) as response:
        answer = await response.json()
        assert response.status == 200, answer

    async def legacy_reported() -> bool:
        _, report = await fleet.api("/api/migration")
        return bool(report["rollback"]) and len(report["legacy"]["connections"]) >= 1

    await fleet.wait_for(legacy_reported, 30, "the rollback and a legacy connection in /api/migration")


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: apt-get install chromium")
async def test_dashboard_shows_stats_migration_and_japanese(fleet, tmp_path):
    await start_fleet_with_rollback(fleet)

    async def stats_settled() -> bool:
        status, body = await fleet.api("/api/stats")
        return status == 200 and body["enabled_shards"] == 4

    await fleet.wait_for(stats_settled, 20, "stats with every shard enabled")
    _, stats = await fleet.api("/api/stats")
    _, report = await fleet.api("/api/migration")
    counts = report["channels"]

    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(locale="en-US", extra_http_headers={"Accept-Language": "en-US,en"})
            await page.goto(f"http://{LOOPBACK}:{fleet.http_port}/")
            # Playwright's expect() polls without evaluating strings, which the dashboard's CSP forbids.
            expect = playwright_api.expect
            await expect(page.locator("#stat-total")).not_to_have_text("–", timeout=15_000)
            await expect(page.locator("#legacy-rows tr").first).to_be_attached(timeout=15_000)

            assert await page.text_content("#stat-total") == str(stats["total_shards"])
            assert await page.text_content("#stat-enabled") == str(stats["enabled_shards"])
            assert await page.text_content("#conduit-id") == stats["conduit_id"]
            assert await page.locator("#shard-grid .cell").count() == stats["total_shards"]

            # The migration panel against /api/migration, in English.
            assert report["status"] == "not_started"
            assert await page.text_content("#migration-status") == "not started"
            assert await page.text_content("#migration-phase") == "no phase started yet"
            assert await page.text_content("#migration-batch") == "no batch yet"
            for mode in ("websocket", "both", "conduit", "fallback"):
                assert await page.text_content(f"#mode-{mode}") == str(counts[mode]), mode
            assert counts["websocket"] == len(LEGACY_IDS)
            assert await page.text_content("#conduit-share") == (
                f"{report['conduit_percent']:g} % of {counts['total']} channels on the conduit")
            assert await page.text_content("#legacy-used") == (
                f"{report['legacy']['used']} / {report['legacy']['capacity']:,} subscriptions placed")
            assert await page.locator("#legacy-rows tr").count() == len(report["legacy"]["load"])
            rollback = await page.text_content("#migration-rollback")
            assert ", manual, " in rollback
            assert rollback.endswith(f"{len(LEGACY_IDS)} channels: {report['rollback']['reason']}")
            assert (await page.text_content("#migration-fallback")).startswith("not active")
            assert await page.text_content("#compare-scope") == "no batch is soaking; since the start: 0 events compared"
            transports = await page.locator("#compare-rows tr td:first-child").all_text_contents()
            assert transports == ["conduit", "websocket (legacy)"]

            await page.click("#lang-ja")
            await expect(page.locator("html")).to_have_attribute("lang", "ja")

            assert await page.text_content("section#shard-summary h2") == "シャード"
            assert await page.text_content("section#capacity h2") == "容量使用率"
            assert "有効" in await page.text_content("#shard-summary .count.ok")

            # The migration panel in Japanese.
            assert await page.text_content("section#migration h2") == "移行"
            assert await page.text_content("#migration-status") == "未開始"
            assert await page.text_content("#migration-phase") == "まだフェーズを開始していません"
            rollback_ja = await page.text_content("#migration-rollback")
            assert "、手動、" in rollback_ja
            assert rollback_ja.endswith(f"{len(LEGACY_IDS)} チャンネル：{report['rollback']['reason_ja']}")
            assert report["rollback"]["reason_ja"] == "並行稼働中のチャンネルの手動ロールバック"
            assert await page.text_content("#legacy-used") == (
                f"{report['legacy']['used']} / {report['legacy']['capacity']:,} サブスクリプションを配置済み")
            assert (await page.text_content("#migration-fallback")).startswith("発動していません")
            transports = await page.locator("#compare-rows tr td:first-child").all_text_contents()
            assert transports == ["Conduit", "WebSocket（旧方式）"]
            headers = await page.locator("section#migration thead th").all_text_contents()
            assert "イベント損失" in headers
            assert "平均レイテンシ" in headers
            assert "直近 1 時間の切断" in headers
            await page.screenshot(path=str(tmp_path / "dashboard-ja.png"), full_page=True)
            assert (tmp_path / "dashboard-ja.png").stat().st_size > 0
        finally:
            await browser.close()

    _, after = await fleet.api("/api/migration")
    assert orjson.dumps(after["channels"]) == orjson.dumps(counts)
