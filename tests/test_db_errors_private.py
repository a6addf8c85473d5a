"""A database error's text never carries the statement's parameters (subscribers' numbers)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from notifier.db import session_scope
from notifier.models import ContactPoint


def test_database_errors_hide_parameters(database_url: str) -> None:
    with pytest.raises(sa.exc.IntegrityError) as caught, session_scope(database_url) as session:
        session.execute(sa.insert(ContactPoint), [{"account_id": 999_999, "kind": "msisdn",
                                                   "value": "+84912345678", "position": 0}] * 2)
    assert "+84912345678" not in str(caught.value)
