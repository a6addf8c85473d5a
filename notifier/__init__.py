"""notifier: warn an operator's subscribers about infected devices and leaked personal data."""

__version__ = "0.1.0"
