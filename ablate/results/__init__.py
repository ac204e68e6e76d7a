"""Results files written atomically with provenance, the ledger, and saved runs read back."""
