"""Open a search run's results in a real browser: ``pareto.html`` and optuna-dashboard on ``study.journal``.

1. ``pareto.html`` (written by ``srnas front``) in headless Chromium (Playwright driving the system's
   ``chromium``; Debian: ``apt-get install chromium``): the trial points and the reference-model stars are
   drawn, and hovering a front point shows its trial, genotype and spec. A screenshot goes next to the report
   (``pareto_browser.png``).
2. optuna-dashboard started on the run's journal (``optuna-dashboard RUN/study.journal --host 127.0.0.1``):
   the study is served through its HTTP API with the objective names and the trials' user attributes (spec,
   genotype); a screenshot of its study page goes to ``dashboard_browser.png``.

    .venv/bin/python scripts/check_browser.py results/quick          # after `srnas search` + `srnas front`

Prints a JSON summary; exits 1 with one line naming the failed check. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
VIEWPORT = {"width": 1200, "height": 800}


class CheckFailed(Exception):
    """A browser check did not see what it expected."""


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def _browser(playwright: Any, chromium: str) -> Any:
    return playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])


def check_pareto_html(run_dir: Path, chromium: str, references: list[str]) -> dict[str, Any]:
    """Render ``run_dir/pareto.html``; check points, reference stars and hover text; save a screenshot."""
    import pandas as pd
    from playwright.sync_api import sync_playwright

    page_path = run_dir / "pareto.html"
    if not page_path.is_file():
        raise CheckFailed(f"{page_path} does not exist (run `srnas front {run_dir}` first)")
    trials = pd.read_csv(run_dir / "trials.csv")
    complete = trials[trials["state"] == "COMPLETE"]
    with sync_playwright() as p:
        browser = _browser(p, chromium)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(page_path.resolve().as_uri())
        page.wait_for_selector("g.scatterlayer path.point", timeout=30_000)
        points = page.locator("g.scatterlayer path.point").count()
        labels = page.locator("g.scatterlayer g.textpoint text").all_text_contents()
        front = page.locator("g.scatterlayer g.trace").nth(1).locator("path.point").first
        front.hover(force=True)
        page.wait_for_selector("g.hoverlayer g.hovertext", timeout=10_000)
        hover = page.locator("g.hoverlayer g.hovertext").first.text_content() or ""
        shot = run_dir / "pareto_browser.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    expected = len(complete) + len(references)
    if points < expected:
        raise CheckFailed(f"pareto.html drew {points} points, expected {len(complete)} trials + {len(references)} refs")
    missing = sorted(set(references) - set(labels))
    if missing:
        raise CheckFailed(f"pareto.html lacks the reference markers {', '.join(missing)} (drawn: {labels})")
    genotypes = set(complete["genotype"].astype(str))
    if "trial" not in hover or not any(g in hover for g in genotypes) or "spec:" not in hover:
        raise CheckFailed(f"the hover text shows no trial/genotype/spec: {hover[:200]!r}")
    entities = [e for e in ("&quot;", "&amp;", "&lt;", "&gt;", "&#") if e in hover]
    if entities:
        raise CheckFailed(f"the hover text shows raw HTML entities {entities}: {hover[:200]!r}")
    return {"points": points, "reference_labels": labels, "hover": hover[:300], "screenshot": str(shot)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _wait_for(url: str, process: subprocess.Popen, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise CheckFailed(f"optuna-dashboard exited with status {process.returncode} before serving {url}")
        try:
            return _get_json(url)
        except OSError:
            if time.monotonic() > deadline:
                raise CheckFailed(f"optuna-dashboard did not answer {url} within {timeout:.0f} s") from None
            time.sleep(0.5)


def dashboard_command(journal: Path, port: int) -> list[str]:
    """The command the README gives: optuna-dashboard reads srnas's journal file directly."""
    exe = shutil.which("optuna-dashboard") or str(Path(sys.executable).with_name("optuna-dashboard"))
    return [exe, str(journal), "--host", "127.0.0.1", "--port", str(port)]


def check_dashboard(run_dir: Path, chromium: str, objectives: list[str]) -> dict[str, Any]:
    """Serve ``run_dir/study.journal`` with optuna-dashboard; check objective names and user attributes."""
    from playwright.sync_api import sync_playwright

    journal = run_dir / "study.journal"
    if not journal.is_file():
        raise CheckFailed(f"{journal} does not exist")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (run_dir / "dashboard.log").open("w")
    process = subprocess.Popen(dashboard_command(journal, port), stdout=log, stderr=subprocess.STDOUT)
    try:
        studies = _wait_for(f"{base}/api/studies", process, timeout=60)["study_summaries"]
        if len(studies) != 1:
            raise CheckFailed(f"optuna-dashboard serves {len(studies)} studies, expected 1")
        study_id = studies[0]["study_id"]
        detail = _get_json(f"{base}/api/studies/{study_id}")
        if detail.get("objective_names") != objectives:
            raise CheckFailed(f"objective names {detail.get('objective_names')} != {objectives}")
        attrs = {a["key"] for t in detail["trials"] if t["state"] == "Complete" for a in t["user_attrs"]}
        if not {"spec", "genotype"} <= attrs:
            raise CheckFailed(f"the complete trials' user attributes lack spec/genotype: {sorted(attrs)}")
        shot = run_dir / "dashboard_browser.png"
        with sync_playwright() as p:
            browser = _browser(p, chromium)
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(f"{base}/dashboard/studies/{study_id}")
            page.wait_for_selector(f"text={studies[0]['study_name']}", timeout=30_000)
            page.wait_for_timeout(1500)  # let the plots draw
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
    return {"study": studies[0]["study_name"], "trials": len(detail["trials"]), "screenshot": str(shot)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run folder holding pareto.html, trials.csv and study.journal")
    parser.add_argument("--references", default="", help="comma-separated reference models expected on the plot")
    parser.add_argument("--objectives", default="psnr,runtime_ms", help="objective names the dashboard must show")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("check_browser: no chromium on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 1
    refs = [r for r in args.references.split(",") if r]
    try:
        summary = {
            "pareto_html": check_pareto_html(args.run, chromium, refs),
            "dashboard": check_dashboard(args.run, chromium, args.objectives.split(",")),
        }
    except CheckFailed as exc:
        print(f"check_browser: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
