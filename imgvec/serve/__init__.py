"""``imgvec serve``: the library over HTTP (FastAPI + uvicorn) and a web page to search it.

:mod:`~imgvec.serve.app` builds the application over the Python API (one call per endpoint, the
JSON shapes of the CLI's ``--json``); :mod:`~imgvec.serve.security` decides who may ask;
:mod:`~imgvec.serve.watch` keeps folders in the library as files come and go; ``page/`` is the
page, plain HTML, CSS and JavaScript with no build step. FastAPI, uvicorn and watchdog are the
``serve`` extra: nothing here is imported unless ``imgvec serve`` runs.
"""
