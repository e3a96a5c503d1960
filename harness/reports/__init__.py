"""Everything a run leaves behind: JSON reports, repro bundles, the machine description, JUnit, HTML, plots, merged summaries."""
