"""One module per `greencode train` sub-command; each defines `command` (mounted by train.cli)."""
