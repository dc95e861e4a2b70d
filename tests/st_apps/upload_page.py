"""The Streamlit page the AppTest tests run: upload, decode, thumbnail, status."""

import streamlit as st

from amulet_native.integrations import streamlit as an_st

MAX_BYTES = 64 << 10

f = st.file_uploader("Image", key="image")
rgb = an_st.decode_upload(f, max_bytes=MAX_BYTES, show_errors=True)
if rgb is not None:
    st.write(f"decoded {rgb.shape[1]}x{rgb.shape[0]} writeable={rgb.flags.writeable}")
    st.image(an_st.thumbnail_bytes(rgb, (32, 32)))
    model = an_st.cached_model(lambda: (lambda a: int(a.mean())), pool_size=2)
    st.write(f"mean={model.run(rgb)}")
    with an_st.memory_limit(mb=1):
        import numpy as np

        np.ones(64 << 20, np.uint8)
        st.write("allocated past the budget")  # never shown
stats = an_st.image_cache().get_stats()
st.write(f"hits={stats['hits']} misses={stats['misses']} items={stats['items']}")
an_st.status_panel()
