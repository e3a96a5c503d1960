"""The search for defects: ``explore`` (Hypothesis over random networks) and the mutation corpus."""
