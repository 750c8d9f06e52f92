"""A Scala session in Chromium (issue 11), on a workbench whose engines have the cluster's Spark
(the pyspark package laid out as a SPARK3 parcel) and Debian's OpenJDK: the console shows what
the code prints and the REPL's echo, Tab completes from the Scala REPL, a Spark job's result
comes back, the Scala template's example.scala runs from the editor, and a compile error is
shown as the cell's error."""

from __future__ import annotations

import re
from typing import Any, Iterator

import pytest
from playwright.sync_api import Page, expect

from ..integration.spark_fixtures import java_home, parcels_dir
from .conftest import VIEWPORT, Console, Server, screenshot, sign_in, start_server
from .test_journeys import new_project
from .test_workloads import ENGINE_START_MS, run_in_console

pytestmark = pytest.mark.timeout(600)
FIRST_CELL_MS = 240000  # the JVM and the Scala compiler's first run, on a busy 2-core machine


@pytest.fixture(scope="module")
def spark_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    java = java_home()
    assert java, "no Java 17: install openjdk-17-jre-headless (scripts/ci/apt-packages.txt)"
    yield from start_server(tmp_path_factory.mktemp("browser-scala"), "port", {
        "cluster_client_kind": "cm-parcels", "cluster_client_dirs": [str(parcels_dir())],
        "java_home": java})


@pytest.fixture
def scala_page(browser: Any, spark_server: Server, console: Console) -> Iterator[Page]:
    context = browser.new_context(base_url=spark_server.url, viewport=VIEWPORT)
    context.set_default_timeout(15000)
    page = context.new_page()
    page.on("console", lambda m: console.errors.append("console %s: %s" % (m.type, m.text))
            if m.type == "error" else None)
    page.on("pageerror", lambda e: console.errors.append("uncaught: %s" % e))
    yield page
    context.close()
    assert not console.unexpected(), "browser console errors: %s" % console.unexpected()


def test_scala_session_shows_output_completes_and_runs_spark(scala_page: Page) -> None:
    page = scala_page
    sign_in(page, "alice")
    pid = new_project(page, "scala")
    page.goto("/projects/%d/sessions" % pid)
    page.get_by_label("Kernel").select_option("scala")
    page.get_by_role("button", name="Start Session").click()
    page.wait_for_url(re.compile(r"/sessions/\d+$"))
    expect(page.locator("#session-status")).to_contain_text("running", timeout=ENGINE_START_MS)

    run_in_console(page, 'println("scala-says-" + (6 * 7)); val cdswWords = List("a", "b")')
    cell = page.locator("#console-output .cell").last
    expect(cell.locator("pre.out-stdout").first).to_contain_text("scala-says-42",
                                                                 timeout=FIRST_CELL_MS)
    expect(cell).to_contain_text("val cdswWords: List[String] = List(a, b)", timeout=30000)

    # Tab: the Scala REPL's completion fills in the only match
    prompt = page.get_by_label("Console input")
    prompt.fill("cdswWo")
    prompt.press("Tab")
    expect(prompt).to_have_value("cdswWords", timeout=30000)
    prompt.fill("")

    run_in_console(page, "sc.parallelize(1 to 100, 2).map(_ * 2).sum()")
    expect(page.locator("#console-output .cell").last).to_contain_text(
        "Double = 10100.0", timeout=FIRST_CELL_MS)

    # the Scala template's example.scala, opened from the file tree and run as a whole
    page.locator(".tree-panel").get_by_role("link", name="example.scala").click()
    expect(page.locator("#editor-filename")).to_have_text("example.scala")
    page.get_by_role("button", name="Run File").click()
    expect(page.locator("#console-output .cell").last).to_contain_text(
        "sum of squares: 385", timeout=60000)

    run_in_console(page, "cdswWords.size + notDefined")
    expect(page.locator("#console-output .cell").last).to_contain_text(
        "not found: value notDefined", timeout=30000)
    screenshot(page, "scala-session")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#session-status")).to_contain_text("stopped", timeout=60000)
