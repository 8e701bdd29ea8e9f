"""The `fdm` command line (click)."""
