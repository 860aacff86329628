"""Tasks on the running node (issue 12, item 5): submit, claim, run, record the result."""
