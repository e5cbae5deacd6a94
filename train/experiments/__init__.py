"""One-off measurements kept so their figures in docs/results.md can be reproduced."""
