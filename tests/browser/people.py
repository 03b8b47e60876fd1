"""What a person does in the browser: log in, fill a task's form, find a task."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from playwright.sync_api import Page, expect

BROWSER_ZONE = ZoneInfo("Europe/Berlin")  # the browser contexts' time zone (see conftest)


def log_in(page: Page, username: str, password: str) -> None:
    """Log in through the login form."""
    page.goto("/login")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_test_id("who")).to_contain_text(username)


def local_datetime(value: str) -> str:
    """An ISO 8601 UTC time as a person in the browser's zone types it into a date-time field."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    return moment.astimezone(BROWSER_ZONE).strftime("%Y-%m-%dT%H:%M")


def fill_form(page: Page, data: dict, skip: tuple[str, ...] = ()) -> None:
    """Answer a task's form with ``data``, field by field, as a person would."""
    for key, value in data.items():
        if key in skip:
            continue
        name = f"data.{key}"
        inputs = page.locator(f"[name='{name}']")
        kind = inputs.first.get_attribute("type") or inputs.first.evaluate("el => el.tagName.toLowerCase()")
        if kind == "checkbox":
            inputs.first.set_checked(bool(value))
        elif kind == "radio":
            page.locator(f"[name='{name}'][value='{str(value).lower() if isinstance(value, bool) else value}']").check()
        elif kind == "select":
            inputs.first.select_option(str(value))
        elif kind == "datetime-local":
            inputs.first.fill(local_datetime(value))
        else:
            inputs.first.fill(str(value))


def open_task(page: Page, therapy: str, task_name: str) -> None:
    """Find a task of a therapy in the inbox (by its COI, or a patient reference the user may know) and open it."""
    page.goto(f"/tasks?therapy={therapy}")
    page.get_by_role("link", name=task_name).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(task_name)
