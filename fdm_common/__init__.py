"""What every fdm package may import, and which imports no other fdm package: the user-error type
(`errors.FdmError`), the JSON-round-tripping config base (`config.Config`) and the name ->
constructor registries (`registry.Registry`). Keeping these here is what lets `kernels` and
`sampling_schemes` stay independent of `fdm_engine` (tests/test_import_layers.py checks it)."""
