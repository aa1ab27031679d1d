"""A flexible water force field (SPC/Fw) as an ASE calculator, to drive a short classical MD of
the example 64-water box for examples/ir_water.py. numpy only; orthorhombic cells.

SPC/Fw (Wu, Tepper & Voth, J. Chem. Phys. 124, 024503, 2006): harmonic O–H bonds and H–O–H
angle, point charges q_O = −0.82 e, q_H = +0.41 e between molecules, Lennard-Jones between
oxygens. Beyond the original (which uses Ewald sums), electrostatics use the damped
shifted-force sum (Fennell & Gezelter, J. Chem. Phys. 124, 234104, 2006; α = 0.2 Å⁻¹) with
a 6 Å cutoff, which fits in the 12.2 Å box (minimum image) and conserves energy well.

``bond="morse"`` replaces the harmonic O–H bond by a Morse bond with the same minimum and
curvature and q-TIP4P/F's well depth (116.09 kcal/mol; Habershon, Markland & Manolopoulos,
J. Chem. Phys. 131, 024501, 2009). A harmonic bond's frequency cannot respond to the pull
of hydrogen bonds; an anharmonic one softens, which red-shifts and broadens the liquid's
O–H stretch band.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from scipy.special import erfc

KCAL = 0.0433641  # eV per kcal/mol
KE = 14.399645  # e²/(4πε₀) in eV·Å
SPCFW = {
    "k_bond": 1059.162 * KCAL,  # eV/Å², U = k/2 (r - r0)²
    "r0": 1.012,  # Å
    "k_angle": 75.90 * KCAL,  # eV/rad², U = k/2 (θ - θ0)²
    "theta0": math.radians(113.24),
    "q_o": -0.82,
    "q_h": 0.41,
    "sigma": 3.165492,  # Å, O–O
    "epsilon": 0.1554253 * KCAL,  # eV, O–O
    "morse_depth": 116.09 * KCAL,  # eV, bond="morse"
}


class FlexibleWater(Calculator):
    """SPC/Fw energy and forces for atoms ordered O, H, H, O, H, H, … (whole molecules)."""

    implemented_properties = ["energy", "forces"]  # noqa: RUF012 - ASE's class attribute

    def __init__(self, cutoff: float = 6.0, alpha: float = 0.2, bond: str = "harmonic", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if bond not in ("harmonic", "morse"):
            raise ValueError(f"bond must be 'harmonic' or 'morse', got {bond!r}")
        self.cutoff, self.alpha, self.bond = cutoff, alpha, bond
        self._pairs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _pair_list(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """All atom pairs i < j of different molecules."""
        if n not in self._pairs:
            i, j = np.triu_indices(n, k=1)
            keep = i // 3 != j // 3
            self._pairs[n] = (i[keep], j[keep])
        return self._pairs[n]

    def calculate(self, atoms: Any = None, properties: Any = ("energy",), system_changes: Any = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        r = self.atoms.get_positions()
        cell = self.atoms.cell.array
        if np.abs(cell - np.diag(np.diag(cell))).max() > 1e-9:
            raise ValueError("FlexibleWater handles orthorhombic cells only")
        length = np.diag(cell)
        n = len(r)
        if n % 3 or self.atoms.get_chemical_symbols()[:3] != ["O", "H", "H"]:
            raise ValueError("atoms must be whole water molecules ordered O, H, H")

        def wrap(d: np.ndarray) -> np.ndarray:
            return d - length * np.round(d / length)

        energy, forces = self._intramolecular(r, wrap)
        e_inter, f_inter = self._intermolecular(r, wrap, n)
        self.results = {"energy": energy + e_inter, "forces": forces + f_inter}

    def _intramolecular(self, r: np.ndarray, wrap: Any) -> tuple[float, np.ndarray]:
        p = SPCFW
        forces = np.zeros_like(r)
        u, v = wrap(r[1::3] - r[0::3]), wrap(r[2::3] - r[0::3])
        lu, lv = np.linalg.norm(u, axis=1), np.linalg.norm(v, axis=1)
        energy = 0.0
        for d, length, slot in ((u, lu, 1), (v, lv, 2)):
            stretch = length - p["r0"]
            if self.bond == "harmonic":
                energy += 0.5 * p["k_bond"] * float((stretch**2).sum())
                dudr = p["k_bond"] * stretch
            else:  # Morse, same curvature at r0: k = 2 D β²
                depth = p["morse_depth"]
                beta = math.sqrt(p["k_bond"] / (2 * depth))
                x = np.exp(-beta * stretch)
                energy += depth * float(((1 - x) ** 2).sum())
                dudr = 2 * depth * beta * x * (1 - x)
            f = -(dudr / length)[:, None] * d
            forces[slot::3] += f
            forces[0::3] -= f
        cos = np.clip((u * v).sum(axis=1) / (lu * lv), -1.0, 1.0)
        theta = np.arccos(cos)
        energy += 0.5 * p["k_angle"] * float(((theta - p["theta0"]) ** 2).sum())
        sin = np.maximum(np.sqrt(1.0 - cos**2), 1e-8)
        de = (p["k_angle"] * (theta - p["theta0"]) / sin)[:, None]  # dU/dθ · (−dθ/dcos)
        f1 = de * (v / (lu * lv)[:, None] - cos[:, None] * u / (lu**2)[:, None])  # −dU/du
        f2 = de * (u / (lu * lv)[:, None] - cos[:, None] * v / (lv**2)[:, None])
        forces[1::3] += f1
        forces[2::3] += f2
        forces[0::3] -= f1 + f2
        return energy, forces

    def _intermolecular(self, r: np.ndarray, wrap: Any, n: int) -> tuple[float, np.ndarray]:
        p, rc, a = SPCFW, self.cutoff, self.alpha
        i, j = self._pair_list(n)
        d = wrap(r[j] - r[i])
        dist = np.linalg.norm(d, axis=1)
        near = dist < rc
        i, j, d, dist = i[near], j[near], d[near], dist[near]
        q = np.where(np.arange(n) % 3 == 0, p["q_o"], p["q_h"])
        qq = KE * q[i] * q[j]
        # damped shifted force: energy and force go to zero at rc
        shift_f = erfc(a * rc) / rc**2 + 2 * a / math.sqrt(math.pi) * math.exp(-(a * rc) ** 2) / rc
        e_c = qq * (erfc(a * dist) / dist - erfc(a * rc) / rc + shift_f * (dist - rc))
        f_c = qq * (erfc(a * dist) / dist**2 + 2 * a / math.sqrt(math.pi) * np.exp(-(a * dist) ** 2) / dist - shift_f)
        oo = (i % 3 == 0) & (j % 3 == 0)
        sr6 = (p["sigma"] / dist[oo]) ** 6
        sr6_c = (p["sigma"] / rc) ** 6
        e_lj = 4 * p["epsilon"] * ((sr6**2 - sr6) - (sr6_c**2 - sr6_c))  # truncated and shifted
        f_lj = 24 * p["epsilon"] * (2 * sr6**2 - sr6) / dist[oo]
        scalar = f_c
        scalar[oo] += f_lj
        fvec = (scalar / dist)[:, None] * d  # force on j; −fvec on i
        forces = np.zeros_like(r)
        for k in range(3):
            forces[:, k] = np.bincount(j, fvec[:, k], minlength=n) - np.bincount(i, fvec[:, k], minlength=n)
        return float(e_c.sum() + e_lj.sum()), forces
