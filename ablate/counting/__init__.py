"""The counter's parts (ablate/count.py is its face): rules, receptive fields, fake runs."""
