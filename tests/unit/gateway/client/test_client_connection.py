"""What the client shows of the gateway's keyboard-interactive instructions."""

from __future__ import annotations

from gateway.client.connection import shown_instructions


def test_instructions_keep_their_lines_and_lose_control_characters() -> None:
    text = "wrong code. Enter the code\x1b]0;owned\x07 your app shows now.\r\n  JBSW Y3DP\n"
    assert shown_instructions(text) == (
        "wrong code. Enter the code?]0;owned? your app shows now.\n  JBSW Y3DP")
