"""The agent host: runners, isolation, supervision."""
