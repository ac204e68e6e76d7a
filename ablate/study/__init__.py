"""The studies: their registry, the design of their variants, their runs, --seeds auto."""
