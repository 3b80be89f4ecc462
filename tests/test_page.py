"""`bench report`: one self-contained HTML page from a tiny real run, checked as HTML everywhere
and in headless Chromium where it is installed."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .helpers import TINY_SUITE, invoke, write

SECTIONS = ("protocol", "results", "seeds", "curves", "alignment", "status", "provenance")
EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A tiny teacher run (BP logs angles and a nullspace ratio), then one record turned into a
    failed cell with an evil label, as a hostile or broken results folder could hold."""
    folder = tmp_path_factory.mktemp("page")
    suite = TINY_SUITE.replace(
        "  dfa:\n", "    metrics: {log_interval: 2, nullspace_layers: [2]}\n  dfa:\n")
    out = folder / "r"
    run = invoke("run", write(folder / "s.yaml", suite), "--out", out, "--quiet")
    assert run.exit_code == 0, run.output
    path = out / "teacher" / "dfa" / "seed-1.json"
    record = json.loads(path.read_text())
    record.update(status="error", reason="boom & <b>bust</b>", label=EVIL)
    path.write_text(json.dumps(record))
    return out


@pytest.fixture(scope="module")
def page(results):
    result = invoke("report", results)
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"wrote {results / 'report.html'}"
    return (results / "report.html").read_text()


def test_the_page_has_every_section_and_is_usable_on_a_phone(page):
    for name in SECTIONS:
        assert f'<section id="{name}"><h2>' in page
    assert '<meta name="viewport" content="width=device-width' in page
    assert "max-width" in page and "overflow-x:auto" in page
    assert "svg{width:100%;height:auto" in page and page.count("<svg") >= 4


def test_nothing_on_the_page_leaves_the_file(page):
    assert "http://" not in page and "https://" not in page
    for value in re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page, flags=re.I):
        assert value.startswith(("#", "data:")), value
    assert "<script" not in page.lower() and "<link" not in page.lower()


def test_strings_from_records_are_escaped(page):
    assert EVIL not in page
    assert html_escaped(EVIL) in page


def html_escaped(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def test_status_shows_the_failed_cell_and_its_reason(page):
    status = page[page.index('<section id="status">'):page.index('<section id="provenance">')]
    assert "error" in status and "boom &amp; &lt;b&gt;bust&lt;/b&gt;" in status
    assert "<td>1</td>" in status  # the seed


def test_results_and_alignment_hold_the_numbers(page):
    results = page[page.index('<section id="results">'):page.index('<section id="seeds">')]
    assert "(n=2)" in results and "<strong>" in results
    alignment = page[page.index('<section id="alignment">'):page.index('<section id="status">')]
    assert "angle to BP" in alignment and "nullspace ratio" in alignment
    provenance = page[page.index('<section id="provenance">'):]
    assert "float64" in provenance and "source: teacher" in provenance


def test_out_option_and_one_line_errors(results, tmp_path):
    target = tmp_path / "elsewhere.html"
    result = invoke("report", results, "--out", target)
    assert result.exit_code == 0 and target.read_text().startswith("<!DOCTYPE html>")
    assert result.stderr.strip() == f"wrote {target}"
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = invoke("report", empty)
    assert missing.exit_code == 2 and missing.stderr.strip() == f"error: no records in {empty}"
    unwritable = invoke("report", results, "--out", tmp_path / "no" / "such" / "r.html")
    assert unwritable.exit_code == 2 and len(unwritable.stderr.strip().splitlines()) == 1
    assert "cannot write" in unwritable.stderr


# Nothing leaves the machine: names resolve nowhere and every connection goes to a closed local
# port; chromium's own background services are switched off where it allows.
CHROMIUM_FLAGS = ["--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-default-apps", "--disable-extensions",
                  "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
                  "--enable-logging=stderr", "--v=0"]


def _open_in_chromium(browser: str, page: Path, folder: Path) -> tuple[str, str, set[str]]:
    """The DOM chromium builds from ``page``, its log, and every URL it requested (net log).
    The timeout only ends a chromium that hangs: on a busy machine it starts slowly."""
    net_log = folder / f"{page.stem}.netlog.json"
    shown = subprocess.run([browser, *CHROMIUM_FLAGS, f"--log-net-log={net_log}",
                            "--dump-dom", page.as_uri()],
                           capture_output=True, text=True, timeout=600, check=True)
    urls = set(re.findall(r'"url":"([^"?]+)', net_log.read_text()))
    return shown.stdout, shown.stderr, urls


def test_the_page_renders_in_headless_chromium_without_errors_or_requests(page, results,
                                                                          tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        # .ci/run installs chromium and sets this: there a missing browser fails, never skips.
        if os.environ.get("BIOPLAUS_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed but BIOPLAUS_REQUIRE_BROWSER=1 (.ci/run)")
        pytest.skip("chromium is not installed: apt-get install chromium")
    report = results / "report.html"
    dom, log, urls = _open_in_chromium(browser, report, tmp_path)
    for name in SECTIONS:
        assert f'id="{name}"' in dom
    assert dom.count("<svg") >= 4
    assert not [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    # What the page itself asked for: the requests beyond those of an empty page.
    empty = tmp_path / "empty.html"
    empty.write_text("<!doctype html><title>empty</title>")
    _, _, baseline = _open_in_chromium(browser, empty, tmp_path)
    assert {url for url in urls - baseline if not url.startswith("file:")} == set()


def test_the_papers_numbers_stand_beside_ours(results, tmp_path):
    copy = tmp_path / "r"
    shutil.copytree(results, copy)
    (copy / "mnist" / "bp").mkdir(parents=True)
    # As if the cells were the paper's MNIST column (its numbers are of 100 epochs), in the
    # folder where MNIST's records count.
    for path in sorted(copy.glob("*/bp/seed-*.json")):
        record = json.loads(path.read_text())
        record["config"]["dataset"]["protocol"]["epochs"] = 100
        (copy / "mnist" / "bp" / path.name).write_text(json.dumps({**record, "dataset": "mnist"}))
        path.unlink()
    result = invoke("report", copy)
    assert result.exit_code == 0, result.output
    page = (copy / "report.html").read_text()
    table = page[page.index('<section id="results">'):page.index('<section id="seeds">')]
    assert '<span class="paper">paper: ' in table and "published mean ± SD" in table
