"""`python -m clevertim_sync` is the `clevertim-sync` command."""

from clevertim_sync.cli import main

main()
