"""The web page of ``mlc ui``: browse tags, check a model, correct tags (see ``app``)."""

from flows.ui.app import create_app

__all__ = ["create_app"]
