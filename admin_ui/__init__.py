"""The admin web console and JSON API (FastAPI), a thin adapter over ``gateway`` services.

It arrives with the console issue; the package exists so the layout is fixed from the start.
"""
