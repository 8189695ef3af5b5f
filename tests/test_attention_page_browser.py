"""The attention page in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, installed by ``make browser``) driven through Selenium. It takes a
screenshot, hovers a target piece and a cell, and switches the n-best hypothesis. Skipped,
with the reason, where Chromium or its driver is not installed: the suite downloads nothing."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments.page_screenshot import CHROMIUM, DRIVER, headless_chromium, screenshot_png
from seq2attn.attention_page import PageHeader, PageHypothesis, PageSentence, render

pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None or DRIVER is None,
        reason="headless Chromium and chromedriver are not installed (make browser installs them)",
    ),
    pytest.mark.timeout(180),
]

WEIGHTS = np.array([[0.7, 0.2, 0.1], [0.05, 0.9, 0.05], [0.125, 0.25, 0.625]])


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    driver = headless_chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(tmp_path: Path) -> Path:
    second = WEIGHTS[::-1].copy()
    sentence = PageSentence(
        source="der Hund sieht",
        source_pieces=["▁der", "▁Hund", "▁sieht"],
        hypotheses=[
            PageHypothesis("the dog sees", -0.5, ["▁the", "▁dog", "</s>"], WEIGHTS),
            PageHypothesis("a dog sees", -1.25, ["▁a", "▁dog", "</s>"], second),
        ],
        reference="the dog sees",
        bleu=100.0,
    )
    path = tmp_path / "attention.html"
    path.write_text(render(PageHeader("browser test", "checkpoint best.ckpt"), [sentence]))
    return path


def test_hovering_a_target_piece_shows_its_row_of_weights(browser: object, page: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser
    driver.get(page.as_uri())  # type: ignore[attr-defined]
    png = screenshot_png(driver)
    with Image.open(io.BytesIO(png)) as image:
        assert image.size[0] >= 800 and image.size[1] >= 600
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 10  # text and coloured cells, not a blank page

    def shown(k: int) -> object:
        return driver.find_element(By.CSS_SELECTOR, f'div.hyp[data-k="{k}"]')  # type: ignore[attr-defined]

    for k, weights in enumerate((WEIGHTS, WEIGHTS[::-1])):
        if k:
            Select(driver.find_element(By.CSS_SELECTOR, "select.nbest")).select_by_value("1")  # type: ignore[attr-defined]
        assert shown(k).is_displayed() and not shown(1 - k).is_displayed()  # type: ignore[attr-defined]
        grid = shown(k)
        for i in range(3):
            target = grid.find_elements(By.CSS_SELECTOR, "th.t")[i]  # type: ignore[attr-defined]
            ActionChains(driver).move_to_element(target).perform()
            labels = [
                float(span.text)
                for span in grid.find_elements(By.CSS_SELECTOR, "th.s .w")  # type: ignore[attr-defined]
            ]
            assert labels == pytest.approx(weights[i].tolist(), abs=5e-4)
        cell = grid.find_elements(By.CSS_SELECTOR, "td")[1]  # type: ignore[attr-defined]
        ActionChains(driver).move_to_element(cell).perform()
        info = driver.find_element(By.CSS_SELECTOR, ".info")  # type: ignore[attr-defined]
        assert info.get_attribute("data-w") == f"{weights[0][1]:.3f}"  # 0.200, then 0.250
        assert info.text.endswith(f"▁Hund: {weights[0][1]:.3f}")
