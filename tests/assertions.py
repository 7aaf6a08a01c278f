"""Assertion helpers shared by the error-message tests."""

import pytest


def raises(exc, call, *fragments):
    """``call()`` raises ``exc`` whose message contains every fragment; returns the message."""
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"message {message!r} lacks {missing}"
    return message
