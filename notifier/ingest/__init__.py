"""Ingest: turn input files into validated, normalised records or rejections, one parser per format.

Parsers are generators: they stream a file, yield a record per good row and a Rejection (line,
reason, raw text) per bad one, and raise InputError only when the file as a whole is unusable.
Storing the records is the importer's job, not theirs.
"""

from notifier.ingest.assignments import ASSIGNMENT_FORMATS, get_assignment_parser, parse_sessions_csv
from notifier.ingest.feeds import FEED_FORMATS, get_feed_parser, parse_leak_csv, parse_shadowserver
from notifier.ingest.records import (
    FeedEventRecord,
    ParseResult,
    Rejection,
    SessionRecord,
    SubscriberRecord,
)
from notifier.ingest.subscribers import parse_subscribers

__all__ = [
    "ASSIGNMENT_FORMATS",
    "FEED_FORMATS",
    "FeedEventRecord",
    "ParseResult",
    "Rejection",
    "SessionRecord",
    "SubscriberRecord",
    "get_assignment_parser",
    "get_feed_parser",
    "parse_leak_csv",
    "parse_sessions_csv",
    "parse_shadowserver",
    "parse_subscribers",
]
