"""Visualisation in Chromium, on the local backend: a job's script run in the engine's kernel
shows its table and image on the run page (the template's analysis.py, which uses display());
an interactive plotly figure drawn in the console by the workbench's own plotly.js with no
request leaving the workbench; an R session's text and plot."""

from __future__ import annotations

import re
from typing import List

import pytest
from playwright.sync_api import Page, expect

from .conftest import Server, screenshot, sign_in
from .test_journeys import new_project
from .test_workloads import ENGINE_START_MS, run_in_console

pytestmark = pytest.mark.timeout(600)


def start_session(page: Page, pid: int, kernel: str) -> None:
    page.goto("/projects/%d/sessions" % pid)
    page.get_by_label("Kernel").select_option(kernel)
    page.get_by_role("button", name="Start Session").click()
    page.wait_for_url(re.compile(r"/sessions/\d+$"))
    expect(page.locator("#session-status")).to_contain_text("running", timeout=ENGINE_START_MS)


def stop_session(page: Page) -> None:
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#session-status")).to_contain_text("stopped", timeout=60000)


def test_job_run_page_shows_the_scripts_table_and_image(page: Page) -> None:
    sign_in(page, "alice")
    pid = new_project(page)  # the python template: analysis.py display()s a DataFrame, plots
    page.goto("/projects/%d/jobs/new" % pid)
    page.get_by_label("Name", exact=True).fill("analysis")
    page.get_by_label("Script").fill("analysis.py")
    page.get_by_role("button", name="Create Job").click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    page.get_by_role("button", name="Run Now").click()
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    expect(page.locator("#run-status")).to_contain_text("succeeded", timeout=ENGINE_START_MS)
    # the log stays plain text: the table's and the figure's text forms, no markup
    log = page.locator("#run-log")
    expect(log).to_contain_text("first rows:")
    expect(log).to_contain_text("<Figure size")
    assert "<table" not in (log.text_content() or "")
    download = page.get_by_role("link", name="download")
    assert (download.get_attribute("href") or "").endswith("/log")
    # the rich outputs, in order: the DataFrame as a table in a sandboxed frame, then the plot
    outputs = page.locator("#run-outputs")
    expect(outputs.locator("iframe.out-html")).to_have_attribute("sandbox", "allow-same-origin")
    table = page.frame_locator("#run-outputs iframe.out-html").locator("table")
    expect(table.locator("th").filter(has_text="sin")).to_have_count(1)
    expect(table.locator("tbody tr")).to_have_count(12)
    image = outputs.locator("img.out-image")
    expect(image).to_be_visible()
    assert (image.get_attribute("src") or "").startswith("data:image/png;base64,")
    assert image.evaluate("img => img.naturalWidth") > 100
    # and the interactive chart, drawn on the run page as in the console
    plot = page.frame_locator("#run-outputs iframe.out-plot")
    expect(plot.locator(".gtitle")).to_have_text("sin(x/4), interactive", timeout=30000)
    expect(plot.locator(".scatterlayer .point")).to_have_count(12)
    screenshot(page, "job-run-outputs")


def test_interactive_plot_renders_offline_in_the_console(page: Page, server: Server) -> None:
    requests: List[str] = []
    page.context.on("request", lambda r: requests.append(r.url))  # every frame's
    sign_in(page, "alice")
    pid = new_project(page)
    start_session(page, pid, "python3")
    run_in_console(page, "import plotly.express as px; "
                         "px.scatter(x=[1, 2, 3], y=[4, 1, 9], title='interactive-42').show()")
    frame_el = page.locator("#console-output .cell").last.locator("iframe.out-plot")
    expect(frame_el).to_have_attribute("sandbox", "allow-scripts", timeout=60000)  # opaque origin
    plot = page.frame_locator("#console-output .cell:last-child iframe.out-plot")
    expect(plot.locator("svg.main-svg").first).to_be_visible(timeout=30000)
    expect(plot.locator(".gtitle")).to_have_text("interactive-42")
    expect(plot.locator(".scatterlayer .point")).to_have_count(3)
    # drawn by plotly.js, live: the mode bar answers the pointer
    plot.locator(".nsewdrag").first.hover()
    expect(plot.locator(".modebar")).to_be_visible()
    # the frame cannot read the viewer's page or cookies
    assert frame_el.evaluate("f => { try { return !!f.contentDocument; } catch (e) { return false; } }") is False
    screenshot(page, "console-plotly")
    # what the page and the plot's frame loaded (Playwright does not report the requests of an
    # opaque-origin srcdoc frame: the frame's own Resource Timing entries list them)
    [inner] = [f for f in page.frames if f.url == "about:srcdoc"]
    loaded = requests + inner.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    outside = [u for u in loaded if not u.startswith((server.url, "data:", "about:", "blob:"))]
    assert outside == [], "requests left the workbench: %s" % outside
    assert server.url + "/vendor/plotly.js-dist-min/plotly.min.js" in loaded, loaded
    stop_session(page)


def test_r_session_shows_text_and_a_plot(page: Page) -> None:
    sign_in(page, "alice")
    pid = new_project(page, "r")
    start_session(page, pid, "r")
    run_in_console(page, "cat(sprintf('r-says-%d', 6L * 7L))")
    expect(page.locator("#console-output .cell").last.locator("pre.out-stdout")).to_contain_text(
        "r-says-42", timeout=60000)
    run_in_console(page, "plot(1:10, main = 'r-plot')")
    image = page.locator("#console-output .cell").last.locator("img.out-image")
    expect(image).to_be_visible(timeout=60000)
    assert image.evaluate("img => img.naturalWidth") > 100
    run_in_console(page, "head(mtcars, 3)")  # a data.frame: IRkernel's HTML table
    table = page.frame_locator("#console-output .cell:last-child iframe.out-html").locator("table")
    expect(table).to_contain_text("Mazda RX4", timeout=30000)
    screenshot(page, "r-session")
    stop_session(page)
