"""convo-runner: replay scripted dialogues against OpenAI-compatible chat endpoints."""

from runner._version import __version__

__all__ = ["__version__"]
