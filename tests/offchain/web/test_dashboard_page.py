"""The public dashboard, without a wallet: every number equals a web3.py read of the same chain."""

from __future__ import annotations

from chain_reads import dashboard_facts
from playwright.sync_api import expect
from web_testkit import ETH_MODEL, TOKEN_MODEL, assert_keyboard_reachable, screenshot


def test_dashboard_numbers_equal_the_chain(open_page, web_url, web_chain):
    page = open_page(f"{web_url}#/dashboard")
    for model_id in (ETH_MODEL, TOKEN_MODEL):
        page.get_by_label("Model", exact=True).select_option(str(model_id))
        report = page.locator(f".report[data-model='{model_id}']")
        expect(report).to_be_visible()
        facts = dashboard_facts(web_chain.protocol, model_id)
        for stage, expected in facts["stages"].items():
            stage_row = report.locator(f"tr[data-stage='{stage}']")
            expect(stage_row.locator("[data-field='round']")).to_have_text(str(expected["round"]))
            for role in ("members", "validators"):
                shown = stage_row.locator(f"[data-field='{role}'] .address").evaluate_all(
                    "spans => spans.map((s) => s.title)"
                )
                assert sorted(shown) == expected[role]
        for state, count in facts["claims"].items():
            expect(report.locator(f"[data-field='claims-{state}']")).to_have_text(str(count))
        expect(report.locator("[data-field='supply']")).to_have_attribute("data-raw", str(facts["supply"]))
        holders = report.locator("tr[data-holder]")
        expect(holders).to_have_count(len(facts["holders"]))
        for address, balance in facts["holders"].items():
            shares = report.locator(f"tr[data-holder='{address}'] [data-field='shares']")
            expect(shares).to_have_attribute("data-raw", str(balance))
        expect(report.locator("[data-field='payments']")).to_have_text(str(facts["payments"]))
        for field, amount in facts["money"].items():
            expect(report.locator(f"[data-field='{field}']")).to_have_attribute("data-raw", str(amount))
        expect(report.locator("figure.chart canvas")).to_have_count(2)  # claims and revenue over time
        screenshot(page, f"dashboard-model-{model_id}")
    assert_keyboard_reachable(page)
