"""A real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright, for tests that
open what synthgen serves or writes as a person's browser would.

Playwright's own browser download cannot work here (no internet), so it launches the system
Chromium. Missing, the tests skip on a developer's machine and fail under CI=true: a CI
whose setup lost the browser must not pass by running none of them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("SYNTHGEN_TEST_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _missing(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}; .ci/setup installs it (apt-get install chromium chromium-driver)")
    pytest.skip(why)


@dataclass
class Page:
    """A page and what it said: console errors, uncaught exceptions, every request made."""

    page: object
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium with a fresh profile (the browser context)."""
    if not Path(CHROMIUM).exists():
        _missing(f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (the dev extra)")
    profile = tempfile.mkdtemp(prefix="synthgen-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=FLAGS)
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def open_page(context, url: str) -> Page:
    page = context.new_page()
    seen = Page(page)
    page.on("console", lambda m: seen.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: seen.console_errors.append(f"uncaught: {exc}"))
    page.on("request", lambda r: seen.requests.append(r.url))
    page.goto(url, wait_until="load")
    return seen
