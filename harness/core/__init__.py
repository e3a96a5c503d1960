"""The bottom layer: errors, the component catalogue, process settings. Imports nothing of the harness."""
