"""The Textual playground (`greencode tui FILE`)."""
