"""The HTML report of a small run in a real headless Chromium (Debian's `chromium`, driven by its
command line): opened from disk (file://), every image loads (naturalWidth > 0), the page logs nothing
to the console and breaks no rule of its Content-Security-Policy, and a screenshot is written.

How the page's state is read without a driver: the test loads a copy of the report with a small script
put first in <head> (before the page's CSP, which then still applies to everything else). On `load` the
script writes each image's state and every error or CSP violation it saw into a <pre> of the DOM, which
`--dump-dom` prints; console messages come on stderr with `--enable-logging=stderr`.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from locedit.report.runs import write_report_html

CHROMIUM_TIMEOUT_S = 120
PROBE_ID = "locedit-browser-check"
PROBE = f"""<script>
window.__seen = [];
addEventListener("error", e => {{
  __seen.push("error: " + (e.message || (e.target && e.target.src || "").slice(0, 80)));
}}, true);
document.addEventListener("securitypolicyviolation", e => {{
  __seen.push("csp: " + e.violatedDirective + " " + e.blockedURI);
}});
addEventListener("load", () => {{
  const images = [...document.images].map(
    i => ({{complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}})
  );
  const out = document.createElement("pre");
  out.id = "{PROBE_ID}";
  out.textContent = JSON.stringify({{images: images, errors: __seen}});
  document.body.appendChild(out);
}});
</script>"""


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        binary,
        "--headless",
        "--no-sandbox",  # root in CI and containers
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S)


def browser_check(binary: str, page: Path, work: Path) -> tuple[dict, list[str]]:
    """Load `page` (a copy with the probe) in headless Chromium; (what the probe saw, console lines)."""
    text = page.read_text(encoding="utf-8")
    assert text.count("<head>") == 1
    probed = work / f"probed-{page.name}"
    probed.write_text(text.replace("<head>", "<head>\n" + PROBE, 1), encoding="utf-8")
    done = _chromium(
        binary,
        work / "profile",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probed.resolve().as_uri(),
    )
    found = re.search(rf'<pre id="{PROBE_ID}">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the page never finished loading (exit {done.returncode}): {done.stderr[-2000:]}"
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(html.unescape(found.group(1))), console


def screenshot(binary: str, page: Path, png: Path, work: Path) -> Path:
    done = _chromium(
        binary,
        work / "profile",
        "--hide-scrollbars",
        "--window-size=1280,2400",
        f"--screenshot={png}",
        page.resolve().as_uri(),
    )
    assert png.is_file(), f"no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    return png


@pytest.mark.parametrize("kind", ["trace", "eval", "comparison"])
def test_html_report_passes_the_chromium_check(kind, chromium, request, tmp_path):
    run = request.getfixturevalue(f"{kind}_run")
    page, report = write_report_html(run, tmp_path / f"{kind}.html")
    seen, console = browser_check(chromium, page, tmp_path)
    assert len(seen["images"]) == len(report.figures) > 0
    assert all(img["complete"] and img["width"] > 0 and img["height"] > 0 for img in seen["images"]), seen
    assert seen["errors"] == [] and console == []
    shot = screenshot(chromium, page, tmp_path / f"{kind}-screenshot.png", tmp_path)
    with Image.open(shot) as im:
        assert im.size == (1280, 2400)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 50  # the page drew text, tables and images, not a blank window


def test_the_browser_check_catches_a_broken_page(chromium, tmp_path):
    """The check can fail: a broken data URI, an image from outside the page (blocked by the CSP) and a
    console message are all caught."""
    from locedit.report.html import CSP

    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}; script-src \'unsafe-inline\'">'
        '</head><body><img src="data:image/png;base64,AAAA"><img src="file:///nonexistent/x.png">'
        '<script>console.error("boom")</script></body></html>'
    )
    seen, console = browser_check(chromium, page, tmp_path)
    assert [img["width"] for img in seen["images"]] == [0, 0]
    assert any(e.startswith("csp: img-src") for e in seen["errors"]) and any("boom" in line for line in console)
