"""The admin web console and JSON API (FastAPI), a thin adapter over ``gateway`` services.

Pages (:mod:`admin_ui.pages`) and the API (:mod:`admin_ui.api`) prove who is acting — a
console session or an API token — and hand the actor to the same ``gateway`` services,
which decide what may be done and audit it. Nothing here handles file contents.
"""
