import os
import warnings

import pytest

from tests.support.services import require

from .browser import CHROMIUM, CHROMIUM_ARGS, DevStack
from .harness import Harness

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the dev requirements install it
    sync_playwright = None


@pytest.fixture
def harness(request, tmp_path, smtp):
    h = Harness(request, tmp_path, smtp)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture(scope="module")
def chromium_path():
    require("chromium", os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK), CHROMIUM)
    require("playwright", sync_playwright is not None, "pip install playwright")
    return CHROMIUM


@pytest.fixture(scope="module")
def dev_stack(chromium_path, tmp_path_factory):
    stack = DevStack(tmp_path_factory.mktemp("dev-stack") / "instance")
    try:
        stack.start()
        yield stack
    finally:
        leftovers = stack.stop()
        if leftovers:
            warnings.warn(f"the dev command left processes running after SIGTERM: {leftovers}", stacklevel=1)


@pytest.fixture(scope="module")
def browser(chromium_path):
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture
def page(browser, dev_stack):
    context = browser.new_context(base_url=dev_stack.base_url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()
