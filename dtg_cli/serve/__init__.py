"""`dtg serve`: the models loaded once, behind an HTTP API, one continuous batch per model across clients.

A job layer over the engine, beside `dtg_cli.batch`: `workers.py` (a decode thread per model, jobs in and
events out), `bodies.py` (request bodies read into requests, errors as JSON), `openai_api.py` (the
OpenAI-compatible routes' bodies and answers), `app.py` (the Starlette app: routes, key, limits, event streams, /metrics) and `page.html`
(the page at /). `docs/serve.md` documents the API.
"""
