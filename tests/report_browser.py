"""The Snakemake report as a person sees it: rendered by a real headless Chromium.

``render(report_html, png, figure=None)`` opens the self-contained ``snakemake --report report.html``
in Debian's Chromium (fresh profile, no network, no GPU) and writes a screenshot; with ``figure``
(the end of a result's path, e.g. ``figures/umap.png``) a copy of the report is opened that, once
loaded, shows that result with its caption, as a click on it in the report does. It returns the
page's visible text (``--dump-dom``, scripts and styles removed) and Chromium's console messages.
``blank_fraction`` and ``error_lines`` judge the screenshot and the text.
"""
from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--disable-extensions", "--disable-default-apps", "--mute-audio", "--enable-logging=stderr", "--v=0"]
# text that means the page or one of its scripts failed (captions may say "error bars"), or that
# docutils could not render a caption's reStructuredText ("System Message: WARNING/2 ...")
ERROR_PATTERNS = re.compile(r"Traceback|Exception|Uncaught|SyntaxError|TypeError|ReferenceError|"
                            r"\bError:|\berror:|failed to load|Not Found|Cannot read|undefined is not|"
                            r"System Message|(?:WARNING|ERROR|SEVERE)/\d",
                            re.IGNORECASE)
# injected into a copy of the report: show one result, with its caption, as a click on it does
SHOW_RESULT = """
<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var path = Object.keys(results).find(function (p) { return p.endsWith(%(suffix)s); });
    if (!path) { document.body.insertAdjacentHTML("beforeend", "<p>result %(suffix_text)s Not Found</p>"); return; }
    app.setView({navbarMode: "resultinfo", resultPath: path, content: "img", contentPath: results[path].data_uri});
  }, 300);
});
</script>
"""


def browser() -> str | None:
    """Path of the Chromium binary, or None."""
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


@dataclass
class Page:
    text: str
    console: list[str]


def _run(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="cellgnn-chromium-") as profile:
        cmd = [browser(), *FLAGS, f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def render(report: str | Path, png: str | Path, figure: str | None = None, size: tuple[int, int] = (1600, 1100),
           budget_ms: int = 20000, timeout: int = 240) -> Page:
    """Screenshot ``report`` (or the page of result ``figure``) to ``png``; return its text and console."""
    report = Path(report)
    with tempfile.TemporaryDirectory(prefix="cellgnn-report-") as tmp:
        page = report
        if figure is not None:
            page = Path(tmp) / "page.html"
            script = SHOW_RESULT % {"suffix": repr(figure), "suffix_text": html.escape(figure)}
            text = report.read_text()
            end = text.rindex("</body>")  # the page's own; its scripts' strings may hold others
            page.write_text(text[:end] + script + text[end:])
        url = page.resolve().as_uri()
        # --timeout: a wall-clock stop beside the virtual-time budget (--dump-dom of a result's page can
        # otherwise wait for ever)
        common = [f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={budget_ms}", f"--timeout={3 * budget_ms}"]
        shot = _run([*common, f"--screenshot={Path(png).resolve()}", url], timeout)
        if shot.returncode != 0 or not Path(png).exists():
            raise RuntimeError(f"chromium could not render {url}: {shot.stderr[-2000:]}")
        dom = _run([*common, "--dump-dom", url], timeout)
    console = [line for line in shot.stderr.splitlines() + dom.stderr.splitlines() if "CONSOLE" in line]
    return Page(visible_text(dom.stdout), console)


def visible_text(dom: str) -> str:
    """The text a reader sees: the DOM without scripts, styles and tags."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))).strip()


def blank_fraction(png: str | Path) -> tuple[float, float]:
    """(share of pixels equal to the most common colour, standard deviation of the grey levels 0-255)."""
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    _, counts = np.unique(img, axis=0, return_counts=True)
    return counts.max() / len(img), float(img.mean(axis=1).std())


def error_lines(page: Page) -> list[str]:
    """Error-like text on the page, and console messages of failed scripts."""
    hits = [m.group(0) for m in ERROR_PATTERNS.finditer(page.text)]
    hits += [c for c in page.console if re.search(r"Uncaught|Error", c)]
    return hits
