"""nerva-consistency: prove that the Nerva MLP backends agree with each other and with exact values.

The package is layered; each layer imports only the layers below it (docs/design.md, "Layers";
checked by import-linter in ``tox -e lint``)::

    cli        the command line
    search     explore (Hypothesis) and the mutation corpus
    reports    JSON, bundles, JUnit, HTML, plots, merge
    run        oracle choice, runner, findings, plan, known defects, conventions
    scenarios  (top level) the catalog and the Hypothesis strategies
    adapters   (top level) the Nerva driver, the four backends, the two oracles
    judge      the rounding bound, the comparator, the one mismatch message
    oracle     the SymPy forward definitions, their derivatives, exact numbers
    spec       input rules, spec strings, Scenario, state, data, flags, memory
    core       errors, the component catalogue, keys, the Backend protocol, process settings

``harness.api`` is the surface for a plug-in (core and spec only). Importing this package, or any
of its subpackages, imports no framework and no SymPy.
"""
