"""Screenshots of ``minicnn explore``'s page, as the README shows it.

Serves a run folder on a free loopback port, opens the page in headless Chromium (Debian's
``chromium`` and ``chromium-driver``, driven through Selenium), draws a digit with mouse
events, opens a convolution's inspector and hovers a pixel, and saves PNGs::

    python docs/explore_screenshot.py runs/mnist docs/explore.png
    python docs/explore_screenshot.py runs/mnist /tmp/phone.png --size 390x844 --full
    python docs/explore_screenshot.py runs/mnist /tmp/inspector.png --inspect

The digit is a "2" drawn as three mouse strokes; ``--digit 1`` draws a "1".
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# A few strokes per digit, in fractions of the pad (x, y).
DIGITS = {
    "1": [[(0.53, 0.14), (0.51, 0.50), (0.49, 0.86)]],
    "2": [[(0.28, 0.32), (0.36, 0.18), (0.52, 0.14), (0.67, 0.22), (0.70, 0.36),
           (0.62, 0.52), (0.46, 0.66), (0.30, 0.82), (0.50, 0.80), (0.74, 0.80)]],
    "7": [[(0.26, 0.20), (0.72, 0.20), (0.58, 0.46), (0.45, 0.84)]],
}


def chromium(width: int, height: int, profile: str):
    """A headless Chromium driven by Debian's chromedriver (no network, a fresh profile)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--hide-scrollbars", f"--window-size={width},{height}",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    if width < 500:     # headless Chromium's windows are at least 500 wide: emulate a phone
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": {
            "width": width, "height": height, "pixelRatio": 1.0}})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def draw(driver, strokes) -> None:
    """Draw ``strokes`` (lists of (x, y) fractions of the pad) with real mouse events."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    pad = driver.find_element(By.ID, "pad")
    rect = pad.rect
    for stroke in strokes:
        points = [(round((x - 0.5) * rect["width"]), round((y - 0.5) * rect["height"]))
                  for x, y in stroke]
        # Interpolate so the pad sees many small moves, as a hand makes.
        dense = []
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            steps = max(1, int(max(abs(x1 - x0), abs(y1 - y0)) // 6))
            dense += [(x0 + (x1 - x0) * i // steps, y0 + (y1 - y0) * i // steps)
                      for i in range(steps)]
        dense.append(points[-1])
        actions = ActionChains(driver, duration=10)
        actions.move_to_element_with_offset(pad, *dense[0]).click_and_hold()
        previous = dense[0]
        for point in dense[1:]:
            actions.move_by_offset(point[0] - previous[0], point[1] - previous[1])
            previous = point
        actions.release().perform()


def wait_for(driver, script: str, timeout: float = 20.0):
    """Poll a JavaScript expression until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script("return " + script)
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"the page never satisfied: {script}")


def settled(driver, timeout: float = 20.0) -> None:
    """Wait until the page has answered the last drawing (no request in flight)."""
    wait_for(driver, "document.getElementById('status').dataset.state === 'ready' && "
                     "document.getElementById('predicted-label').textContent !== '?'", timeout)
    time.sleep(0.3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder written by `minicnn train`")
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--size", default="1366x768", help="window WIDTHxHEIGHT (1366x768)")
    parser.add_argument("--digit", default="2", choices=sorted(DIGITS))
    parser.add_argument("--full", action="store_true", help="the whole page, not the window")
    parser.add_argument("--inspect", action="store_true",
                        help="open the second convolution's inspector and hover a pixel")
    parser.add_argument("--scroll", type=int, default=0, help="scroll down this many pixels")
    args = parser.parse_args(argv)

    from minicnn.explore import Explorer, start_in_thread

    width, height = (int(v) for v in args.size.split("x"))
    server, _ = start_in_thread(Explorer.from_run(args.run))
    with tempfile.TemporaryDirectory() as profile:
        driver = chromium(width, height, profile)
        try:
            driver.get(server.url)
            wait_for(driver, "document.getElementById('status').dataset.state === 'ready'")
            draw(driver, DIGITS[args.digit])
            settled(driver)
            if args.inspect:
                convs = [i for i, layer in enumerate(server.info["layers"]) if layer["conv"]]
                index = convs[1] if len(convs) > 1 else convs[0]
                driver.execute_script(
                    f"document.querySelector('canvas.fmap[data-layer=\"{index}\"]"
                    f"[data-channel=\"3\"]').click()")
                from selenium.webdriver.common.action_chains import ActionChains
                from selenium.webdriver.common.by import By

                big = driver.find_element(By.ID, "insp-map")
                ActionChains(driver).move_to_element_with_offset(
                    big, round(big.rect["width"] * 0.08), round(-big.rect["height"] * 0.05)
                ).click().perform()        # a click is a tap on a phone, a hover elsewhere
                wait_for(driver, "document.querySelector('#insp-math .grid')")
                time.sleep(0.3)
            if args.scroll:
                driver.execute_script(f"window.scrollTo(0, {args.scroll})")
                time.sleep(0.2)
            if args.full:
                total = driver.execute_script("return document.documentElement.scrollHeight")
                driver.set_window_size(width, total)
                time.sleep(0.3)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(args.out)
        finally:
            driver.quit()
            server.shutdown()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
