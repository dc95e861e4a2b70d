"""A real browser on the Streamlit front end: Debian's chromium + chromedriver
through selenium load the page, upload a photo and see the predicted label.
The screenshot is kept as a test artifact in ``tests/artifacts/`` (or
``$AMULET_ARTIFACTS``).  Skips cleanly where no browser is installed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from http_server import REPO_ROOT, UvicornServer, free_port

import amulet_native as an

sys.path.insert(0, str(REPO_ROOT / "python"))
from amulet_service.gallery import generated_picture
from test_service_api import APP, APP_DIR, service_env

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER), reason="chromium/chromedriver not installed"
    ),
    pytest.mark.slow,  # a browser, a Streamlit server and an API: about 30 s
]
ARTIFACTS = Path(os.environ.get("AMULET_ARTIFACTS", REPO_ROOT / "tests" / "artifacts"))


def start_streamlit(api_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "AMULET_API_URL": api_url,
        "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{REPO_ROOT / 'python'}",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(REPO_ROOT / "python" / "amulet_frontend" / "app.py"),
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/_stcore/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError("streamlit did not start")


def test_browser_uploads_a_photo_and_sees_the_label(tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(an.encode_jpeg(an.resize(generated_picture(3), (300, 200)), quality=70))
    with UvicornServer(
        APP, env=service_env(tmp_path), extra_args=APP_DIR, startup_timeout=60
    ) as api:
        proc, url = start_streamlit(api.url)
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM  # type: ignore[assignment]
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1280,1000",
        ):
            opts.add_argument(arg)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        try:
            driver.get(url)
            wait = WebDriverWait(driver, 60)
            upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "input[type=file]"))
            upload.send_keys(str(photo))
            wait.until(lambda d: "Label: amulet-04" in d.find_element(By.TAG_NAME, "body").text)
            wait.until(lambda d: "result cache" in d.find_element(By.TAG_NAME, "body").text)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "frontend_recognise.png"
            driver.save_screenshot(str(shot))
            assert shot.stat().st_size > 10_000
        finally:
            driver.quit()
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
