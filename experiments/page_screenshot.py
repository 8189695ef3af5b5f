"""A screenshot of an attention page in headless Chromium, with a target piece hovered:

    python -m experiments.page_screenshot logs/train/runs/<run>/attention.html \
        docs/figures/attention_page.png --sentence 1 --target 2

Needs Debian's ``chromium`` and ``chromium-driver`` (``make browser``) and selenium (the dev
extras); it drives the installed driver and downloads nothing."""

from __future__ import annotations

import argparse
import base64
import shutil
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
# no sync, update or background requests: this machine's network is closed
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def headless_chromium(width: int = 1200, height: int = 900) -> Any:
    """A Selenium driver of the installed Chromium, through the installed chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if CHROMIUM is None or DRIVER is None:
        raise SystemExit("error: chromium and chromedriver are not installed (make browser)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


def screenshot_png(driver: Any) -> bytes:
    """The visible page as PNG bytes, asked of the browser through the DevTools protocol.

    Selenium's own screenshot command first waits for navigations chromedriver still believes
    pending, and on a loaded machine it has timed out there ("aborted by navigation") with the
    page long loaded; ``Page.captureScreenshot`` renders the page as it is."""
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    return base64.b64decode(shot["data"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", type=Path, help="an attention.html")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--sentence", type=int, default=1, help="the sentence to show (from 1)")
    parser.add_argument("--target", type=int, default=1, help="the target piece to hover (from 1)")
    args = parser.parse_args()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver = headless_chromium()
    try:
        driver.get(args.page.resolve().as_uri())
        section = driver.find_element(By.ID, f"s{args.sentence}")
        driver.execute_script("arguments[0].scrollIntoView()", section)
        target = section.find_elements(By.CSS_SELECTOR, "div.hyp th.t")[args.target - 1]
        ActionChains(driver).move_to_element(target).perform()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(screenshot_png(driver))
    finally:
        driver.quit()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
