"""The dashboard driven in headless Chromium (Debian's `chromium`, through playwright) against
a running `tideflow dev`."""

from __future__ import annotations

import contextlib
import datetime
import os
import pathlib
import textwrap
from collections.abc import Iterator

import pytest
from helpers import Api, eventually, free_port, running
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ROOT = pathlib.Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "run-detail.png"
KEY = "dashboard-test-signing-key"
APP = textwrap.dedent(
    """
    import asyncio
    import datetime

    import tideflow

    client = tideflow.Client(app_id="ui")


    @client.create_function(fn_id="greet", trigger=tideflow.TriggerEvent(event="ui/greet"))
    async def greet(ctx):
        who = await ctx.step.run("look-up", lambda: {"who": ctx.event.data["who"]})
        greeting = await ctx.step.run("compose", lambda: "hello " + who["who"])
        return {"greeting": greeting}


    @client.create_function(
        fn_id="fragile", trigger=tideflow.TriggerEvent(event="ui/fragile"), retries=0
    )
    async def fragile(ctx):
        await ctx.step.run("prepare", lambda: {"ready": True})

        def explode():
            raise ValueError("the widget broke")

        await ctx.step.run("explode", explode)


    @client.create_function(fn_id="nap", trigger=tideflow.TriggerEvent(event="ui/nap"))
    async def nap(ctx):
        await ctx.step.sleep("long-nap", datetime.timedelta(hours=1))
        return "rested"


    @client.create_function(
        fn_id="solo", trigger=tideflow.TriggerEvent(event="ui/solo"), concurrency=1
    )
    async def solo(ctx):
        # The first run's job keeps the one slot a while; the next run's job waits for it.
        await asyncio.sleep(ctx.event.data.get("hold_s", 0))
        return "done"


    @client.create_function(
        fn_id="paced",
        trigger=tideflow.TriggerEvent(event="ui/gate"),
        throttle=tideflow.Throttle(limit=1, period="1h"),
    )
    async def paced(ctx):
        return "paced"


    @client.create_function(
        fn_id="limited",
        trigger=tideflow.TriggerEvent(event="ui/gate"),
        rate_limit=tideflow.RateLimit(limit=1, period="1m"),
    )
    async def limited(ctx):
        return "limited"
    """
)


class Dev:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.api = Api(port)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@contextlib.contextmanager
def dev_engine(directory: pathlib.Path, extra_env: dict[str, str]) -> Iterator[Dev]:
    (directory / "uiapp.py").write_text(APP)
    port = free_port()
    env = {
        "TIDEFLOW_DATABASE_URL": f"sqlite:///{directory}/dev.db",
        "TIDEFLOW_API_URL": f"http://127.0.0.1:{port}",
        "TIDEFLOW_RETRY_BACKOFF_BASE_MS": "50",
        **extra_env,
    }
    with running(["dev", "uiapp:client", "--port", str(port)], cwd=directory, env=env, name="dev"):
        dev = Dev(port)
        try:
            eventually(dev.api.healthy, what="the dev engine to serve")
            yield dev
        finally:
            dev.api.http.close()


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    with dev_engine(tmp_path_factory.mktemp("dashboard"), {}) as engine:
        yield engine


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(20_000)
    # Assertions wait as long as actions: a loaded machine runs the engine slowly.
    expect.set_options(timeout=20_000)
    yield page
    context.close()


def ended_run(dev: Dev, event: dict[str, object]) -> dict[str, object]:
    (event_id,) = dev.api.send(event)
    run = eventually(lambda: dev.api.runs(event_id), what="the event's run")[0]
    return eventually(
        lambda: dev.api.run(run["run_id"])["ended_at"] and dev.api.run(run["run_id"]),
        what="the run to end",
    )


def confirm(page: Page) -> None:
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Confirm").click()


def test_an_event_sent_from_the_ui_starts_a_run_that_appears_live_and_completes(
    dev: Dev, page: Page
) -> None:
    runs = page.context.new_page()
    runs.goto(dev.url + "/runs")
    expect(runs.get_by_role("heading", name="Runs")).to_be_visible()

    page.goto(dev.url + "/events")
    editor = page.get_by_label("Event (JSON")
    editor.fill('{"name": "ui/greet", "data": ')
    expect(page.get_by_text("Not valid JSON")).to_be_visible()
    expect(editor).to_have_attribute("aria-invalid", "true")
    editor.fill('{"data": {}}')
    expect(page.get_by_text('Each event needs a "name"')).to_be_visible()
    editor.fill('{"name": "ui/greet", "data": {"who": "ada"}}')
    page.get_by_role("button", name="Send event").click()
    confirm(page)
    sent = page.locator("#send-result a")
    expect(sent).to_have_count(1)
    event_id = sent.inner_text()

    run = eventually(lambda: dev.api.runs(event_id), what="the event's run")[0]
    row = runs.locator(f'tr[data-run-id="{run["run_id"]}"]')
    # The runs page was loaded before the event was sent: the row comes by SSE, no reload.
    expect(row).to_be_visible()
    expect(row.get_by_text("Completed")).to_be_visible()
    expect(row.get_by_text("ui-greet")).to_be_visible()


def test_the_timeline_shows_step_outputs_and_a_failed_steps_error(dev: Dev, page: Page) -> None:
    greeted = ended_run(dev, {"name": "ui/greet", "data": {"who": "grace"}})
    failed = ended_run(dev, {"name": "ui/fragile", "data": {"order": 42}})

    page.goto(f"{dev.url}/runs/{greeted['run_id']}")
    compose = page.locator('li.step[data-step="compose"]')
    compose.get_by_text("Output").click()
    expect(compose.locator("pre")).to_have_text('"hello grace"')
    expect(page.locator("#run-output-value")).to_contain_text('"greeting": "hello grace"')

    page.goto(f"{dev.url}/runs/{failed['run_id']}")
    expect(page.locator("#run-status")).to_have_text("Failed")
    explode = page.locator('li.step[data-step="explode"]')
    expect(explode.get_by_text("Failed")).to_be_visible()
    expect(explode).to_contain_text("ValueError: the widget broke")
    explode.get_by_text("Stack").click()
    expect(explode.locator("pre")).to_contain_text("raise ValueError")
    expect(page.get_by_text('"order": 42')).to_be_visible()
    page.locator('li.step[data-step="prepare"]').get_by_text("Output").click()
    shot = page.screenshot(full_page=True)
    if os.environ.get("TIDEFLOW_UPDATE_SCREENSHOTS"):
        SCREENSHOT.write_bytes(shot)
    assert shot.startswith(b"\x89PNG")


def test_a_function_is_invoked_with_data_from_the_ui(dev: Dev, page: Page) -> None:
    page.goto(dev.url + "/functions")
    row = page.locator("tr", has_text="ui-greet")
    row.get_by_text("Invoke…").click()
    data = row.get_by_label("Data (JSON object)")
    data.fill("[1, 2]")
    expect(row.get_by_text("Give a JSON object")).to_be_visible()
    data.fill('{"who": "lin"}')
    row.get_by_role("button", name="Invoke").click()
    confirm(page)
    started = row.locator(".result a")
    expect(started).to_have_count(1)
    started.click()

    expect(page.locator("#run-status")).to_have_text("Completed")
    expect(page.locator("#run-output-value")).to_contain_text('"greeting": "hello lin"')


def test_a_sleeping_run_is_cancelled_from_the_ui(dev: Dev, page: Page) -> None:
    (event_id,) = dev.api.send({"name": "ui/nap"})
    run = eventually(lambda: dev.api.runs(event_id), what="the nap's run")[0]
    eventually(lambda: dev.api.steps(run["run_id"]), what="the run to fall asleep")

    page.goto(f"{dev.url}/runs/{run['run_id']}")
    expect(page.get_by_text("Sleeping until")).to_be_visible()
    page.get_by_role("button", name="Cancel run").click()
    confirm(page)
    expect(page.locator("#action-result")).to_have_text("Run is now Cancelled.")
    expect(page.locator("#run-status")).to_have_text("Cancelled")
    assert dev.api.run(run["run_id"])["status"] == "Cancelled"


def test_sleeping_runs_are_cancelled_in_bulk_from_the_ui(dev: Dev, page: Page) -> None:
    now = datetime.datetime.now(datetime.UTC)
    naps = dev.api.send({"name": "ui/nap", "data": {"who": "a"}}, {"name": "ui/nap", "data": {}})
    runs = [eventually(lambda e=e: dev.api.runs(e), what="a nap's run")[0] for e in naps]
    for run in runs:
        eventually(lambda r=run: dev.api.steps(r["run_id"]), what="the run to fall asleep")
    greeted = ended_run(dev, {"name": "ui/greet", "data": {"who": "bo"}})

    page.goto(dev.url + "/functions")
    form = page.get_by_role("form", name="Cancel runs in bulk")
    form.get_by_label("Function").select_option("ui-nap")
    form.get_by_label("Queued from (UTC)").fill(local(now - datetime.timedelta(minutes=5)))
    form.get_by_label("until (UTC)").fill(local(now + datetime.timedelta(minutes=5)))
    form.get_by_label("Only if").fill("event.data.who == 'a'")
    form.get_by_role("button", name="Cancel runs…").click()
    expect(page.locator("dialog#confirm")).to_contain_text("event.data.who == 'a'")
    confirm(page)

    expect(page.locator("#bulk-cancel-result")).to_contain_text("Completed, 1 run cancelled.")
    assert [dev.api.run(run["run_id"])["status"] for run in runs] == ["Cancelled", "Running"]
    assert dev.api.run(str(greeted["run_id"]))["status"] == "Completed"


def local(moment: datetime.datetime) -> str:
    """A `datetime-local` field's value (the page labels it UTC)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def test_a_failed_run_is_rerun_from_the_ui(dev: Dev, page: Page) -> None:
    failed = ended_run(dev, {"name": "ui/fragile", "data": {"order": 7}})

    page.goto(f"{dev.url}/runs/{failed['run_id']}")
    page.get_by_role("button", name="Rerun").click()
    confirm(page)
    new_run = page.locator("#action-result a")
    expect(new_run).to_have_count(1)
    rerun_id = new_run.inner_text()
    # At once: the page follows the run from before it exists to its end, without a reload.
    new_run.click()

    expect(page).to_have_url(f"{dev.url}/runs/{rerun_id}")
    expect(page.locator("#run-status")).to_have_text("Failed")
    expect(page.get_by_text('"order": 7')).to_be_visible()
    assert rerun_id != failed["run_id"]


def test_pages_fit_a_narrow_screen_and_are_keyboard_navigable(dev: Dev, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        for path in ("/runs", "/functions", "/events", "/status"):
            page.goto(dev.url + path)
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.goto(dev.url + "/runs")
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="Functions")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Functions")).to_be_visible()
        expect(page.get_by_role("link", name="ui-greet")).to_be_visible()
    finally:
        context.close()


def test_the_login_refuses_a_wrong_key(tmp_path: pathlib.Path, browser: Browser) -> None:
    with dev_engine(tmp_path, {"TIDEFLOW_SIGNING_KEY": KEY}) as dev:
        page = browser.new_page()
        try:
            assert dev.api.http.get("/v1/runs").status_code == 401
            page.goto(dev.url + "/functions")
            expect(page).to_have_url(f"{dev.url}/login?next=/functions")
            page.get_by_label("Signing key").fill("not-the-key")
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("alert")).to_have_text("That is not the signing key.")
            page.get_by_label("Signing key").fill(KEY)
            page.get_by_role("button", name="Log in").click()
            expect(page).to_have_url(f"{dev.url}/functions")
            expect(page.get_by_role("link", name="ui-greet")).to_be_visible()
        finally:
            page.close()


def test_the_run_page_says_why_flow_control_holds_a_run(dev: Dev, page: Page) -> None:
    (holding,) = dev.api.send({"name": "ui/solo", "data": {"hold_s": 15}})
    first = eventually(lambda: dev.api.runs(holding), what="the first solo run")[0]
    eventually(
        lambda: dev.api.run(first["run_id"])["status"] == "Running",
        what="the first run to take the slot",
    )
    (waiting,) = dev.api.send({"name": "ui/solo"})
    second = eventually(lambda: dev.api.runs(waiting), what="the second solo run")[0]

    page.goto(f"{dev.url}/runs/{second['run_id']}")
    expect(page.locator("#run-held")).to_contain_text("Waiting for a concurrency slot since")

    first_gate, second_gate = (
        dev.api.send({"name": "ui/gate", "data": {"n": n}})[0] for n in (1, 2)
    )
    paced = eventually(
        lambda: [r for r in dev.api.runs(second_gate) if r["function_id"] == "ui-paced"],
        what="the throttled run",
    )[0]
    page.goto(f"{dev.url}/runs/{paced['run_id']}")
    expect(page.locator("#run-status")).to_have_text("Queued")
    expect(page.locator("#run-held")).to_contain_text("Throttled: starts at")
    assert first_gate != second_gate


def test_the_event_page_says_why_an_event_started_no_run(dev: Dev, page: Page) -> None:
    # The rate limit (1 a minute) lets the first of two events through, refuses the second.
    dev.api.send({"name": "ui/gate", "data": {"n": 3}})
    (refused,) = dev.api.send({"name": "ui/gate", "data": {"n": 4}})
    eventually(lambda: dev.api.runs(refused), what="the event to be processed")

    page.goto(f"{dev.url}/events/{refused}")
    reason = page.locator('#not-started li[data-function="ui-limited"]')
    expect(reason).to_contain_text("rate_limited")
    expect(reason).to_contain_text("its rate limit was reached")
