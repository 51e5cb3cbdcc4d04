"""The Snakemake HTML report as a reader sees it: rendered by headless Chromium (Debian `chromium`).

Uses the session's demo run (tests/data/fast_demo.yaml overlay, in a clean copy of the project), builds ``snakemake --report``, then lets Chromium execute the report's React app. A small
probe script, appended to a copy of the report, clicks through the app's own menus (category ->
subcategory -> each result's view button) and records what the content pane shows; ``--dump-dom``
returns the DOM after the scripts ran. The test then checks that every table (an iframe with the
table's HTML) and every figure (a decoded PNG) was shown. The slow test of the suite (a few minutes).
"""

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import FAST_DEMO, run_snakemake

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's `chromium` is not installed (apt-get install -y chromium; .ci/run installs it in CI)",
)

# Appended to a copy of the report: drives the app through its own links and buttons, then writes
# what it saw as JSON into <pre id="probe"> (read back from --dump-dom).
PROBE = r"""
<script>
(function () {
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const links = (text) => Array.from(document.querySelectorAll("a")).filter((a) => a.textContent.trim() === text);
  const resultRows = () => Array.from(document.querySelectorAll("nav tbody tr")).filter((tr) => tr.querySelector("a"));
  async function open(category, subcategory, errors) {
    // the reader's path: main menu -> category link -> subcategory link (when there are several)
    app.setView({navbarMode: "menu"});
    await sleep(100);
    const categoryLink = links(Object.keys(categories).length == 1 ? "Results" : category)[0];
    if (!categoryLink) { errors.push("no menu link for " + category); return null; }
    categoryLink.click();
    await sleep(100);
    if (Object.keys(categories[category]).length > 1) {
      const subLink = links(subcategory)[0];
      if (!subLink) { errors.push("no link for " + category + "/" + subcategory); return null; }
      subLink.click();
      await sleep(100);
    }
    return resultRows();
  }
  async function probe() {
    const seen = {categories: Object.keys(categories), menu: [], shown: [], errors: []};
    await sleep(500);
    seen.menu = Array.from(document.querySelectorAll("a")).map((a) => a.textContent.trim()).filter((t) => t);
    for (const category of Object.keys(categories).sort()) {
      for (const subcategory of Object.keys(categories[category]).sort()) {
        const first = await open(category, subcategory, seen.errors);
        if (!first) continue;
        if (!first.length) seen.errors.push("no results listed for " + category + "/" + subcategory);
        for (let i = 0; i < first.length; i++) {
          const row = (await open(category, subcategory, seen.errors))[i];
          const button = row.querySelectorAll("a[type=button]")[0];  // the view ("eye") button; the next one is info
          const item = {category, subcategory, row: row.innerText.replace(/\s+/g, " ").trim()};
          if (button.hasAttribute("download")) {
            item.kind = "download"; item.result = button.getAttribute("download"); seen.shown.push(item); continue;
          }
          button.click();
          await sleep(150);
          item.result = app.state.resultPath;
          const img = Array.from(document.querySelectorAll("img[src^='data:image']")).filter((el) => !el.closest("nav"))[0];
          const frame = document.querySelector("iframe[src^='data:']");
          if (img) {
            item.kind = "img"; item.width = img.naturalWidth; item.height = img.naturalHeight;
          } else if (frame) {
            item.kind = "iframe";
            try {
              const bytes = Uint8Array.from(atob(frame.getAttribute("src").split("base64,")[1]), (c) => c.charCodeAt(0));
              item.text = new TextDecoder("utf-8").decode(bytes).slice(0, 20000);
            } catch (e) { item.text = ""; }
          } else { item.kind = "none"; }
          seen.shown.push(item);
        }
      }
    }
    const pre = document.createElement("pre");
    pre.id = "probe";
    pre.textContent = JSON.stringify(seen);
    document.body.appendChild(pre);
  }
  window.addEventListener("load", () => { probe().catch((e) => {
    const pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify({fatal: String(e)});
    document.body.appendChild(pre); }); });
})();
</script>
"""


def chromium(*args, user_data_dir, timeout=180):
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
               f"--user-data-dir={user_data_dir}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def report(demo_run) -> Path:
    """The session's demo run and its self-contained HTML report (SSNET_TEST_REPORT=<report.html> reuses one)."""
    if os.environ.get("SSNET_TEST_REPORT"):
        return Path(os.environ["SSNET_TEST_REPORT"])
    root, run = demo_run
    assert run.returncode == 0, run.stderr[-4000:]
    built = run_snakemake(root, "all", "--cores", "2", *FAST_DEMO, "--report", "report.html", timeout=600)
    assert built.returncode == 0, built.stderr[-4000:]
    return root / "report.html"


def test_report_shows_every_table_and_figure(report, tmp_path):
    probed = tmp_path / "probed.html"
    page = report.read_text(encoding="utf-8")
    end = page.rindex("</body>")  # the last one: bundled scripts contain the string "</body>" too
    probed.write_text(page[:end] + PROBE + page[end:], encoding="utf-8")
    result = chromium("--virtual-time-budget=60000", "--run-all-compositor-stages-before-draw", "--dump-dom",
                      probed.as_uri(), user_data_dir=tmp_path / "profile")
    match = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert match, f"probe did not report; chromium stderr: {result.stderr[-2000:]}"
    seen = json.loads(html.unescape(match.group(1)))
    assert "fatal" not in seen, seen
    assert not seen["errors"], seen["errors"]
    assert {"LA", "ACDC", "Reproducibility"} <= set(seen["categories"])
    assert {"LA", "ACDC", "Reproducibility"} <= set(seen["menu"])

    def shown(category, needle):
        return [s for s in seen["shown"] if s["category"] == category and needle in (s.get("result") or s["row"])]

    for dataset in ("LA", "ACDC"):
        tables = ["main_table.html", "ablation.html", "significance.html"] + (["per_class.html"] if dataset == "ACDC" else [])
        for name in tables:
            hits = [s for s in shown(dataset, name) if s["kind"] == "iframe"]
            assert hits, f"{dataset}/{name} not shown"
            assert '<table class="results">' in hits[0]["text"] and f"<h3>{dataset}: " in hits[0]["text"]
        main = [s for s in shown(dataset, "main_table.html") if s["kind"] == "iframe"][0]["text"]
        assert "Dice (%)" in main and "paper" in main and "Δ" in main and "Full supervision" in main
        assert "Model selection: best_val" in main and "Schedule profile: uniform" in main
        figures = [s for s in seen["shown"] if s["category"] == dataset and s["kind"] == "img"]
        names = {Path(s["result"]).name for s in figures}
        assert {"dice_vs_labelled.png", "training_curves.png", "dice_distribution.png", "qualitative.png"} <= names
        assert all(s["width"] > 200 and s["height"] > 100 for s in figures), figures
        labelled = {s["subcategory"] for s in figures}
        assert {"Full supervision", "All labelled counts"} <= labelled and len(labelled) >= 3
    significance = [s for s in shown("LA", "significance.html") if s["kind"] == "iframe"][0]["text"]
    assert "SS-Net" in significance and "V-Net" in significance
    provenance = [s for s in seen["shown"] if s["category"] == "Reproducibility" and s["kind"] == "iframe"]
    assert provenance and "Resolved configuration" in provenance[0]["text"] and "torch" in provenance[0]["text"]


def test_report_screenshot(report, tmp_path):
    """The landing page renders (a screenshot with content, not a blank page)."""
    shot = tmp_path / "report.png"
    result = chromium("--virtual-time-budget=20000", "--window-size=1400,900", f"--screenshot={shot}", report.as_uri(),
                      user_data_dir=tmp_path / "profile")
    assert shot.is_file(), result.stderr[-2000:]
    from PIL import Image  # matplotlib depends on pillow

    pixels = Image.open(shot).convert("L").getcolors(maxcolors=1 << 20)
    assert pixels is not None and len(pixels) > 20  # more than a blank page
