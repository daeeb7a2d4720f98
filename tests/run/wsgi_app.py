"""A WSGI application for tests/run.rs, served by gunicorn under `baton run`.

It reads $APP_CONF (JSON: {"body": ..., "mode": "ok" | "fail" | "hang"}) when it is imported,
which with gunicorn's --preload happens in the arbiter before it sends READY=1: a broken version
then never says it is ready. GET /slow answers after 1.2 s.
"""
import json
import os
import time

with open(os.environ["APP_CONF"]) as f:
    CONF = json.load(f)

if CONF["mode"] == "fail":
    raise RuntimeError("this version of the application is broken")
if CONF["mode"] == "hang":
    time.sleep(3600)

BODY = CONF["body"].encode()


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/slow":
        time.sleep(1.2)
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))],
    )
    return [BODY]
