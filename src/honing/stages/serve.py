"""`honing serve`: load the models, check who may call, bind the socket, and answer until stopped.

    honing serve model=registry:support-bot@production
    honing serve examples/serve/serve.yaml --port 8080

Phases: keys and exposure (before anything is loaded: a refused configuration costs nothing), the socket (so
"address in use" is a one-line error and port 0 can print the port it got), the models (every one loaded and
checked before the first request), then uvicorn until Ctrl-C or SIGTERM (requests in flight finish first).
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

from honing.config.serve import ServeConfig
from honing.errors import HoningError

log = logging.getLogger(__name__)


def run(cfg: ServeConfig) -> dict[str, Any]:
    server, sock = build(cfg)
    host, port = sock.getsockname()[:2]
    for name, target in server.pool.targets.items():
        rag = cfg.models[name].rag
        grounded = f", answering from the index {rag.index} (top {rag.k}, {rag.mode})" if rag is not None else ""
        print(f"serving {name} ({target.version}){grounded}", file=sys.stderr)
    print(f"honing serve listening on http://{_url_host(host)}:{port}/v1 — requests logged to {cfg.log.path}; "
          "Ctrl-C stops", file=sys.stderr, flush=True)
    listen(server, sock)
    return {"status": "stopped"}


def build(cfg: ServeConfig) -> tuple[Any, socket.socket]:
    """The server state (models loaded) and its bound socket; HoningError for what the user can fix."""
    from honing.serve.app import Server
    from honing.serve.log import RequestLog
    from honing.serve.pool import Pool
    from honing.serve.security import Keys, check_exposure, read_keys

    hashes = read_keys(cfg)
    check_exposure(cfg, hashes)
    sock = bind(cfg.host, cfg.port)
    try:
        request_log = RequestLog(cfg.log.path, redact_pii=cfg.log.redact_pii, store_text=cfg.log.store_text,
                                 sync=cfg.log.sync)
        pool = Pool(cfg)
        pool.load_all()
    except BaseException:
        sock.close()
        raise
    return Server(cfg, pool, request_log, Keys(hashes)), sock


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as err:
        sock.close()
        raise HoningError(f"cannot listen on {host}:{port}: {err.strerror or err} (another server there? try "
                          "--port 0 for a free port)") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def listen(server: Any, sock: socket.socket) -> None:
    """uvicorn on `sock` until stopped."""
    import uvicorn

    from honing.serve.app import create_app

    config = uvicorn.Config(create_app(server), log_level="warning", access_log=False, timeout_keep_alive=5,
                            timeout_graceful_shutdown=int(server.cfg.limits.request_timeout_s))
    uvicorn.Server(config).run(sockets=[sock])


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
