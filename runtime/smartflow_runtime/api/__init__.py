"""The api role's business HTTP application (aiohttp), served on ``SMARTFLOW_HTTP_PORT``."""

from .app import build_api_app

__all__ = ["build_api_app"]
