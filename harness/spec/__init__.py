"""What a run is: the leaf input rules, Nerva's spec strings, the Scenario, its initial state, its data and its memory estimate. Imports only :mod:`harness.core`."""
