"""Start the app: host and port checks (loopback by default, a warning otherwise, a clear
error for a port in use), then Gradio's server with share links and analytics off."""

from __future__ import annotations

import ipaddress
import socket
import warnings

from osdhuman.app.config import AppConfig

# osdhuman.app.ui is imported inside launch: it needs gradio (the optional osdhuman[app] extra).


class AppStartError(RuntimeError):
    """The app cannot start as asked (message says why)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> None:
    """AppStartError if ``host:port`` cannot be bound (in use or not an address here)."""
    if not 1 <= port <= 65535:
        raise AppStartError(f"--port {port}: not a port number (1-65535)")
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            what = "is in use" if exc.errno in (98, 48, 10048) else f"cannot be bound ({exc.strerror})"
            raise AppStartError(f"port {port} on {host} {what}; choose another with --port") from None


def launch(cfg: AppConfig, block: bool = True):
    """Build and serve the app; returns the Blocks (``block=False`` leaves it running)."""
    if not is_loopback(cfg.host):
        warnings.warn(f"--host {cfg.host}: the app is reachable from the network, without authentication", stacklevel=2)
    check_port(cfg.host, cfg.port)
    from osdhuman.app.ui import build_app

    demo = build_app(cfg)
    allowed = [p for p in (cfg.dataset_dir, cfg.results_dir) if p]
    demo.launch(server_name=cfg.host, server_port=cfg.port, share=False, inbrowser=False, quiet=True,
                prevent_thread_lock=not block, ssr_mode=False, footer_links=[], allowed_paths=allowed or None,
                enable_monitoring=False, mcp_server=False, pwa=False,
                show_error=True)  # a refused request tells the client why, in one line
    return demo
