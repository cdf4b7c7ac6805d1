"""Op declarations, grouped by family. Importing this package registers them all."""
from . import basic, elementwise, nn, quant, reduce, shape  # noqa: F401
