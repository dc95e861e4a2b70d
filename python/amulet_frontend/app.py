"""The recognition front end: ``streamlit run python/amulet_frontend/app.py``.

Pages: Recognise (upload one or several photos, or pick a sample: thumbnails,
top labels with scores, timings, cache hits, add to the gallery), Batch job
(a background job with a progress bar), Status (API health, cache hit rate,
memory pressure, recent errors, and this app's own cache).  It talks to the
API at ``$AMULET_API_URL`` through :class:`ApiClient` (retry + circuit
breaker): when the API is down the page says so and keeps working, and it
recovers by itself when the API is back.  Uploads are checked and decoded
locally with ``amulet_native.integrations.streamlit`` (size, type and header
before decoding, one shared cache), which also makes the thumbnails.
"""

import os
import sys
import time
from pathlib import Path
from typing import Any

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `streamlit run` from anywhere

from amulet_service.gallery import generated_picture

import amulet_native as an
from amulet_frontend.client import DEFAULT_URL, ApiClient, ApiUnavailable
from amulet_native.integrations import streamlit as an_st

MAX_UPLOAD = 20 << 20
SAMPLES = {f"amulet-{i + 1:02d} (sample, re-encoded)": i for i in range(6)}


@st.cache_resource
def _client(url: str) -> ApiClient:
    return ApiClient(url)


def api() -> ApiClient:
    """One client (and so one breaker) per API URL, shared by every session."""
    return _client(os.environ.get("AMULET_API_URL", DEFAULT_URL))


@st.cache_data
def sample_bytes(seed: int) -> bytes:
    rgb = an.resize(generated_picture(seed), (320, 213))
    return an.encode_jpeg(rgb, quality=75)


def unavailable(exc: ApiUnavailable) -> None:
    st.warning(f"API unavailable: {exc}. The page keeps working; try again in a moment.")


def show_prediction(name: str, data: bytes, top_k: int) -> None:
    rgb = an_st.decode_upload(data, max_bytes=MAX_UPLOAD, max_size=(1024, 1024), show_errors=True)
    col_img, col_res = st.columns([1, 2])
    if rgb is not None:
        col_img.image(an_st.thumbnail_bytes(rgb, (192, 192)), caption=name)
    try:
        result = api().classify(data, name, top_k)
    except ApiUnavailable as exc:
        with col_res:
            unavailable(exc)
        return
    if not result.ok:
        col_res.error(f"{name}: {result.problem}")
        return
    body = result.body
    best = body["predictions"][0] if body["predictions"] else None
    with col_res:
        if best is not None:
            st.markdown(f"**Label: {best['label']}** (score {best['score']:.3f})")
        st.dataframe(body["predictions"], hide_index=True)
        t = body["timings_ms"]
        st.caption(
            f"result cache: {body['cache']['result']} · image cache: "
            f"{body['cache']['image']} · total {t['total']:.1f} ms "
            f"(upload+decode {t['upload_decode']:.1f} ms"
            + (f", model {t['model_ms']:.1f} ms" if "model_ms" in t else "")
            + ")"
        )
        with st.form(f"add-{body['digest'][:16]}"):
            label = st.text_input("Add this image to the gallery as", value="")
            if st.form_submit_button("Add to gallery") and label:
                try:
                    added = api().add_to_gallery(label, data, name)
                except ApiUnavailable as exc:
                    unavailable(exc)
                else:
                    if added.ok:
                        st.success(f"added as {label!r} ({added.body['count']} references)")
                    else:
                        st.error(added.problem)


def page_recognise() -> None:
    st.header("Which amulet is this?")
    top_k = st.slider("Labels to show", 1, 10, 3)
    files = st.file_uploader("Photos", type=["jpg", "jpeg", "png"], accept_multiple_files=True)
    sample = st.selectbox("...or try a sample picture", ["(none)", *SAMPLES])
    items: list[tuple[str, bytes]] = [(f.name, f.getvalue()) for f in files or []]
    if sample != "(none)":
        items.append((sample, sample_bytes(SAMPLES[sample])))
    for name, data in items:
        show_prediction(name, data, top_k)


def page_batch() -> None:
    st.header("Batch job")
    files = st.file_uploader(
        "Photos for the job", type=["jpg", "jpeg", "png"], accept_multiple_files=True, key="batch"
    )
    use_samples = st.checkbox("Use the 6 sample pictures")
    items = [(f.name, f.getvalue()) for f in files or []]
    if use_samples:
        items += [(name, sample_bytes(seed)) for name, seed in SAMPLES.items()]
    if not st.button("Run the job", disabled=not items):
        return
    try:
        submitted = api().submit_job(items)
    except ApiUnavailable as exc:
        unavailable(exc)
        return
    if not submitted.ok:
        st.error(submitted.problem)
        return
    job_id = submitted.body["id"]
    bar = st.progress(0.0, text=f"job {job_id[:8]} queued")
    state: dict[str, Any] = {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            state = api().job(job_id).body
        except ApiUnavailable as exc:
            unavailable(exc)
            return
        progress = state.get("progress") or {}
        total = progress.get("total") or len(items)
        bar.progress(
            min(progress.get("done", 0) / total, 1.0),
            text=f"job {job_id[:8]}: {state.get('status')} {progress.get('done', 0)}/{total}",
        )
        if state.get("status") in ("finished", "failed"):
            break
        time.sleep(0.3)
    if state.get("status") == "finished":
        rows = [
            {
                "image": items[e["index"]][0],
                "label": e["predictions"][0]["label"] if e.get("predictions") else None,
                "score": e["predictions"][0]["score"] if e.get("predictions") else None,
                "error": e.get("error"),
            }
            for e in state["results"]
        ]
        st.success(f"job {job_id[:8]} finished")
        st.dataframe(rows, hide_index=True)
    else:
        st.error(f"job {job_id[:8]}: {state.get('status')} {state.get('error', '')}")


def page_status() -> None:
    st.header("Status")
    try:
        health = api().health()
        stats = api().stats()
    except ApiUnavailable as exc:
        unavailable(exc)
    else:
        st.subheader(
            f"API health: {health.body.get('status', '?') if isinstance(health.body, dict) else '?'}"
        )
        s = stats.body
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("Result cache hit rate", f"{s['results_cache']['hit_rate']:.0%}")
        img = s.get("image_cache") or {}
        c2.metric("Image cache hit rate", f"{img.get('hit_rate', 0):.0%}")
        c3.metric("Memory pressure", f"{s['memory']['ratio']:.0%}", s["memory"]["level"])
        c4.metric("Mean batch", f"{s['batching']['mean_batch']:.2f}", s["batching"]["breaker"])
        st.caption(
            f"worker {s['worker']} · model {s['model']['name']} "
            f"({s['model']['gallery']} references) · jobs on {s['jobs']['backend']}"
        )
        st.subheader("Recent errors")
        if s["recent_errors"]:
            st.dataframe(s["recent_errors"], hide_index=True)
        else:
            st.write("none")
    st.subheader("This app")
    an_st.status_panel(expanded=True)


def main() -> None:
    st.set_page_config(page_title="Amulet recognition", layout="wide")
    pages = {"Recognise": page_recognise, "Batch job": page_batch, "Status": page_status}
    choice = st.sidebar.radio("Page", list(pages))
    st.sidebar.caption(f"API: {api().base_url}")
    pages[choice]()


main()
