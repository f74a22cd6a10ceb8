"""The HTML report in a real browser: headless Chromium (Debian's chromium and chromium-driver,
installed by .ci/run) opens the smoke run's `snakemake --report` output; every category renders,
every figure decodes, a result opens as an image, and the page logs no JavaScript error.

Skipped, with the reason, only where a browser cannot run (no chromium, no chromedriver, no
selenium); where CI is set, that is a failure instead."""

from __future__ import annotations

import os
import shutil

import pytest

CATEGORIES = ["0. Summary", "1. Finding 1: density", "2. Finding 2: similarity", "3. Finding 3: relevance",
              "4. Validation 1: layer-wise pruning", "5. Validation 2: calibration domain",
              "6. Validation 3: human similarity"]


@pytest.fixture(scope="module")
def browser():
    missing = [name for name in ("chromium", "chromedriver") if not shutil.which(name)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium")
    if missing:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"no browser here: {', '.join(missing)} missing")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", "--allow-file-access-from-files"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


@pytest.mark.slow
def test_the_report_renders_in_a_real_browser(smoke_report, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    path, rep = smoke_report
    assert rep.returncode == 0, (rep.stdout + rep.stderr)[-2000:]
    browser.get(path.as_uri())
    WebDriverWait(browser, 60).until(lambda d: CATEGORIES[0] in d.find_element(By.TAG_NAME, "body").text)
    # the report's own data: every registered category, every figure decodes as an image
    categories = browser.execute_script("return Object.keys(categories);")
    assert sorted(categories) == CATEGORIES
    checks = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const entries = Object.entries(results).filter(([p, e]) => (e.mime_type || "").startsWith("image/"));
        Promise.all(entries.map(([p, e]) => new Promise(resolve => {
            const img = new Image();
            img.onload = () => resolve([p, img.naturalWidth, img.naturalHeight]);
            img.onerror = () => resolve([p, 0, 0]);
            img.src = e.data_uri;
        }))).then(done);
    """)
    assert len(checks) >= 9, checks  # 4 findings figures, 3 pruning figures, 2 validation-3 figures
    broken = [p for p, w, h in checks if w == 0 or h == 0]
    assert not broken, f"figures that do not decode: {broken}"
    # the app itself: open each category from the menu; open a figure as the report's viewer does
    for name in CATEGORIES:  # the menu lists every category; each opens its list of results
        WebDriverWait(browser, 20).until(
            lambda d: [el for el in d.find_elements(By.XPATH, f"//*[normalize-space(text())={name!r}]") if el.is_displayed()]
        )[0].click()
        WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.XPATH, "//*[contains(normalize-space(.), '.png') or "
                                                                   "contains(normalize-space(.), '.csv') or "
                                                                   "contains(normalize-space(.), '.md')]"))
        browser.get(path.as_uri())  # back to the menu
        WebDriverWait(browser, 60).until(lambda d: CATEGORIES[0] in d.find_element(By.TAG_NAME, "body").text)
    figure = next(p for p, w, h in checks if p.endswith("finding1_density.png"))
    browser.execute_script("""
        const entry = results[arguments[0]];
        const img = document.createElement("img");
        img.id = "actpat-check";
        img.src = entry.data_uri;
        document.body.appendChild(img);
    """, figure)
    WebDriverWait(browser, 20).until(lambda d: d.execute_script(
        "const i = document.getElementById('actpat-check'); return i.complete && i.naturalWidth > 0;"))
    shot = tmp_path / "report.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
