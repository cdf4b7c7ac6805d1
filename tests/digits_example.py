"""examples/digits.py, imported by path (examples/ is not a package): the
digits CNN and its data, the tests' model trained on real data."""
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("digits_example",
                                               Path(__file__).resolve().parents[1] / "examples" / "digits.py")
digits = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(digits)
