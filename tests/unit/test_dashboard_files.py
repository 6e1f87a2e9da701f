"""The dashboard's static files: every label exists in English and Japanese, and nothing loads from elsewhere."""

from __future__ import annotations

import re

from coordinator.http import DASHBOARD_DIR
from shard_worker.session import SessionState

KEY = re.compile(r'^\s*"([\w.]+)":\s*"', re.MULTILINE)


def message_tables() -> dict[str, set[str]]:
    text = (DASHBOARD_DIR / "i18n.js").read_text(encoding="utf-8")
    english, japanese = text.split("\n  ja: {")
    return {"en": set(KEY.findall(english)), "ja": set(KEY.findall(japanese))}


def test_languages_have_same_keys():
    tables = message_tables()

    assert tables["en"] - tables["ja"] == set()
    assert tables["ja"] - tables["en"] == set()


def test_html_labels_translated():
    html = (DASHBOARD_DIR / "index.html").read_text(encoding="utf-8")
    used = set(re.findall(r'data-i18n(?:-placeholder)?="([\w.]+)"', html))

    assert used, "index.html has no data-i18n labels"
    assert used - message_tables()["en"] == set()


def test_script_keys_translated():
    script = (DASHBOARD_DIR / "dashboard.js").read_text(encoding="utf-8")
    used = {key for key in re.findall(r'\bt\("([\w.]+)"', script) if not key.endswith(".")}  # skip "state." + name

    assert used - message_tables()["en"] == set()


def test_no_external_assets():
    for path in DASHBOARD_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), path.name
        assert "@import" not in text, path.name


def test_migration_values_translated():
    # dashboard.js builds these keys from API values, so the key check above cannot see them.
    values = {
        "migration.status.": ("not_started", "running", "paused", "completed"),
        "migration.step.": ("idle", "warming", "soaking"),
        "mode.": ("websocket", "both", "conduit", "fallback"),
        "legacy.state.": tuple(state.value for state in SessionState),
    }
    tables = message_tables()

    for prefix, names in values.items():
        for name in names:
            assert prefix + name in tables["en"], prefix + name
            assert prefix + name in tables["ja"], prefix + name
