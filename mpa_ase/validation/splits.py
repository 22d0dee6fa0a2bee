"""Splits by compound identity: random, scaffold (molecules), cluster
(crystals: leave chemical systems out), forward (extrapolate in the target).

Each takes samples (anything with ``identity``, ``value`` and optionally
``smiles``/``formula``) and returns three identity sets (train, val, test);
samples sharing an identity always land on one side.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

SPLITS = ("random", "scaffold", "cluster", "forward")


def _identities(samples) -> dict[str, list]:
    groups: dict[str, list] = defaultdict(list)
    for s in samples:
        groups[s.identity].append(s)
    return groups


def murcko_scaffold(smiles: str) -> str:
    """Bemis-Murcko scaffold SMILES; acyclic molecules share the empty scaffold."""
    from rdkit import Chem
    from rdkit.Chem.Scaffolds import MurckoScaffold

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return smiles
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)


def chemical_system(sample) -> str:
    """Sorted element set of a crystal ("Ga-N"), the cluster for leave-cluster-out."""
    from pymatgen.core import Composition

    formula = sample.formula or sample.identity.split(":", 1)[-1]
    return "-".join(sorted(el.symbol for el in Composition(formula).elements))


def _group_key(sample, kind: str) -> str:
    if kind == "scaffold":
        if not getattr(sample, "smiles", None):
            raise ValueError(f"scaffold split needs SMILES; {sample.identity} has none")
        return murcko_scaffold(sample.smiles)
    if kind == "cluster":
        return chemical_system(sample) if getattr(sample, "formula", None) else murcko_scaffold(sample.smiles)
    return sample.identity


def split(samples, kind: str = "random", val: float = 0.1, test: float = 0.2, seed: int = 0
          ) -> tuple[set[str], set[str], set[str]]:
    """Identity sets (train, val, test).

    random: identities at random. scaffold/cluster: whole groups (Murcko
    scaffolds; chemical systems, or scaffolds for molecules) go to test and
    val, largest-first for the training side as in the usual scaffold split,
    in a seeded order for the held-out side so seeds differ. forward: the
    highest target values are the test set (extrapolation), then val.
    """
    if kind not in SPLITS:
        raise ValueError(f"unknown split {kind!r}; choose from {SPLITS}")
    if not 0 <= val < 1 or not 0 < test < 1 or val + test >= 1:
        raise ValueError(f"bad split fractions val={val}, test={test}")
    groups = _identities(samples)
    ids = sorted(groups)
    n = len(ids)
    rng = np.random.default_rng(seed)
    if kind == "random":
        order = [ids[i] for i in rng.permutation(n)]
        n_test, n_val = round(test * n), round(val * n)
        return set(order[n_test + n_val:]), set(order[n_test:n_test + n_val]), set(order[:n_test])
    if kind == "forward":
        value = {i: float(np.median([s.value for s in groups[i]])) for i in ids}
        order = sorted(ids, key=lambda i: (value[i], i))
        n_test, n_val = round(test * n), round(val * n)
        return set(order[:n - n_test - n_val]), set(order[n - n_test - n_val:n - n_test]), set(order[n - n_test:])
    clusters: dict[str, list[str]] = defaultdict(list)
    for i in ids:
        clusters[_group_key(groups[i][0], kind)].append(i)
    keys = sorted(clusters)
    # held-out clusters are drawn small ones first in a seeded order, so the
    # big generic clusters (e.g. acyclic molecules) stay in training
    keys = [keys[k] for k in rng.permutation(len(keys))]
    keys.sort(key=lambda k: len(clusters[k]))
    test_ids, val_ids, train_ids = set(), set(), set()
    for key in keys:
        members = clusters[key]
        if len(test_ids) + len(members) <= test * n:
            test_ids.update(members)
        elif len(val_ids) + len(members) <= val * n:
            val_ids.update(members)
        else:
            train_ids.update(members)
    return train_ids, val_ids, test_ids


def apply_split(samples, sets) -> tuple[list, list, list]:
    train, val, test = sets
    return ([s for s in samples if s.identity in train], [s for s in samples if s.identity in val],
            [s for s in samples if s.identity in test])
