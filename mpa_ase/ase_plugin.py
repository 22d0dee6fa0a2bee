"""Registers ``MPACalculator`` with ASE's plugin system (``ase.plugins``)."""

try:  # ASE >= 3.29 keeps the plugin classes under ase._4
    from ase._4.plugins.plugin import CalculatorPlugin
except ImportError:  # pragma: no cover - older ASE
    from ase.plugins.plugin import CalculatorPlugin

__ase_plugins__ = [
    CalculatorPlugin(
        "mpa",
        citation="mpa-ase: Materials Property Axiom models in ASE",
        implementation="mpa_ase.calculator.MPACalculator",
    )
]
