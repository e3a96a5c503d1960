"""The exact oracle: the SymPy forward definitions of every component, their derivatives, and their evaluation at exact points. Imports only the layers below."""
