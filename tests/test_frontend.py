"""The Streamlit front end (python/amulet_frontend) against a real API server
(uvicorn subprocess): Streamlit's AppTest for the pages, and the API-down path."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
from http_server import REPO_ROOT, UvicornServer, free_port

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(REPO_ROOT / "python"))
from test_service_api import APP, APP_DIR, service_env

APP_FILE = str(REPO_ROOT / "python" / "amulet_frontend" / "app.py")


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("front")
    with UvicornServer(APP, env=service_env(tmp), extra_args=APP_DIR, startup_timeout=60) as srv:
        yield srv.url


@pytest.fixture
def app(api_url: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("AMULET_API_URL", api_url)
    at = AppTest.from_file(APP_FILE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [w.value for w in at.warning] + [e.value for e in at.error]
    parts += [s.value for s in at.success]
    return "\n".join(str(p) for p in parts)


def test_recognise_a_sample_picture(app: AppTest) -> None:
    sample = next(o for o in app.selectbox[0].options if o.startswith("amulet-03"))
    app.selectbox[0].select(sample).run()
    assert not app.exception, app.exception
    out = texts(app)
    assert "Label: amulet-03" in out, out
    assert "result cache: miss" in out
    app.run()  # a rerun asks again: now a cache hit
    assert "result cache: hit" in texts(app)
    assert len(app.get("image")) >= 1  # the thumbnail


def test_batch_job_with_progress(app: AppTest) -> None:
    app.sidebar.radio[0].set_value("Batch job").run()
    app.checkbox[0].check().run()
    app.button[0].click().run()
    assert not app.exception, app.exception
    out = texts(app)
    assert "finished" in out, out
    rows = app.dataframe[0].value
    assert list(rows["label"]) == [f"amulet-{i:02d}" for i in range(1, 7)]


def test_status_page(app: AppTest) -> None:
    app.sidebar.radio[0].set_value("Status").run()
    assert not app.exception, app.exception
    labels = [m.label for m in app.metric]
    assert "Result cache hit rate" in labels and "Memory pressure" in labels
    assert any("API health" in h.value for h in app.subheader)


def test_api_down_says_so_and_keeps_working(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMULET_API_URL", f"http://127.0.0.1:{free_port()}")
    at = AppTest.from_file(APP_FILE, default_timeout=60)
    at.run()
    sample = next(o for o in at.selectbox[0].options if o.startswith("amulet-01"))
    at.selectbox[0].select(sample).run()
    assert not at.exception, at.exception
    assert any("API unavailable" in w.value for w in at.warning)
    at.sidebar.radio[0].set_value("Status").run()  # the other pages still render
    assert not at.exception and any("API unavailable" in w.value for w in at.warning)
    assert os.environ["AMULET_API_URL"].startswith("http://127.0.0.1:")


@pytest.fixture
def own_app(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[AppTest]:
    """A front end on its own API server: the picture this test adds to the
    gallery ties with amulet-05 and would change what the other tests see,
    whatever order they run in."""
    tmp = tmp_path_factory.mktemp("front-own")
    with UvicornServer(APP, env=service_env(tmp), extra_args=APP_DIR, startup_timeout=60) as srv:
        monkeypatch.setenv("AMULET_API_URL", srv.url)
        at = AppTest.from_file(APP_FILE, default_timeout=60)
        at.run()
        assert not at.exception, at.exception
        yield at


def test_add_to_gallery(own_app: AppTest) -> None:
    app = own_app
    sample = next(o for o in app.selectbox[0].options if o.startswith("amulet-05"))
    app.selectbox[0].select(sample).run()
    app.text_input[0].input("favourite")
    app.button[0].click().run()  # the form submits the typed label with the click
    assert "added as 'favourite'" in texts(app), texts(app)
