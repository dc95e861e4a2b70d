"""The Streamlit front end of the recognition API (see app.py)."""
