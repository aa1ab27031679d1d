"""``dptensor predict --derivatives``: Born charges Z*ᵢ = ∂M/∂rᵢ of every frame (and with
``--modes`` the harmonic IR sticks in km/mol). Formulas: docs/spectra.md. A committee gives
its members' mean Z* with their std; its sticks' intensities are the mean of the members'
(each quadratic in its own Z*, as committee spectra are the mean of the members' spectra)
with their std."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model.errors import ConfigError

if TYPE_CHECKING:
    from model.committee import Predictor


def add_derivative_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("dipole derivatives (dipole models; docs/spectra.md)")
    g.add_argument("--derivatives", action="store_true",
                   help="also write the Born charges Z*_i = ∂M/∂r_i [nf, nat, 3, 3] (autograd) to OUTPUT_born.npz "
                        "and report the acoustic sum rule")
    g.add_argument("--dipole-mode", choices=["global", "wannier"], default="global",
                   help="the total dipole to differentiate: the model's (default) or Σ Z r + q_W Σ_sel (r + Δ)")
    g.add_argument("--charges", help="wannier: ionic charges by element, e.g. O=6,H=1")
    g.add_argument("--q-w", type=float, help="wannier: charge of a Wannier centroid (water: -8)")
    g.add_argument("--modes", help="normal modes (npz with frequencies_cm + modes, ASE VibrationsData .json, or "
                                   "phonopy .yaml): harmonic IR sticks of frame --frame to OUTPUT_ir.json")
    g.add_argument("--frame", type=int, default=0, help="frame of the harmonic IR (default 0)")


def _symbols(model: Predictor, atype: np.ndarray) -> list[str]:
    return [model.type_map[int(t)] for t in atype]


def derivatives_summary(model: Predictor, coord: np.ndarray, atype: np.ndarray, box: np.ndarray | None, *,
                        dipole_mode: str = "global", ionic_charges: dict[str, float] | None = None,
                        q_w: float | None = None) -> tuple[Any, dict[str, Any]]:
    """(BornCharges, JSON-ready summary) — shared by the CLI and the service."""
    from model.dipole_derivatives import born_charges, charges_per_atom

    charges = None
    if dipole_mode == "wannier":
        if not ionic_charges or q_w is None:
            raise ConfigError("wannier derivatives need the ionic charges and q_w", path="ionic_charges")
        charges = charges_per_atom(_symbols(model, atype), ionic_charges)
    born = born_charges(model, coord, atype.tolist(), box, dipole_mode=dipole_mode, charges=charges, q_w=q_w)
    return born, born.report()


def write_derivatives(args: argparse.Namespace, model: Predictor, coord: np.ndarray, atype: np.ndarray,
                      box: np.ndarray | None) -> None:
    from model.spectrum_options import parse_pairs

    charges = parse_pairs(args.charges, "--charges", float) if args.charges else None
    born, summary = derivatives_summary(model, coord, atype, box, dipole_mode=args.dipole_mode,
                                        ionic_charges=charges, q_w=args.q_w)
    out = Path(args.output)
    born_path = out.with_name(f"{out.stem}_born.npz")
    spread = {} if born.z_std is None else {"born_charges_std": born.z_std, "member_born_charges": born.member_z}
    np.savez(born_path, born_charges=born.z, dipole=born.dipole, sum_rule=born.sum_rule,
             total_charge=born.total_charge, **spread)
    print(f"Born charges ({summary['convention']}) -> {born_path}; acoustic sum rule Σ_i Z*_i = "
          f"{born.total_charge:g}·1 holds to {summary['sum_rule_max_violation']:.2e}")
    if born.z_std is not None:
        print(f"committee of {born.committee_size}: Z* is the members' mean; largest std {born.z_std.max():.3e} e "
              "(born_charges_std, member_born_charges)")
    if args.modes:
        from ase.data import atomic_masses, atomic_numbers

        from model.normal_modes import harmonic_ir, read_modes

        if not 0 <= args.frame < len(born.z):
            raise ConfigError(f"frame {args.frame} of {len(born.z)}", path="--frame")
        masses = np.array([atomic_masses[atomic_numbers[s]] for s in _symbols(model, atype)])
        modes = read_modes(args.modes, masses)
        sticks = harmonic_ir(born.z[args.frame], masses, modes)
        if born.member_z is not None:  # intensities are quadratic in Z*: the members' mean, and its spread
            members = np.array([harmonic_ir(z[args.frame], masses, modes)["intensity_km_mol"] for z in born.member_z])
            sticks.update(intensity_km_mol=members.mean(0).tolist(), intensity_km_mol_std=members.std(0).tolist(),
                          committee_size=born.committee_size)
        sticks["born_charges"] = summary
        ir_path = out.with_name(f"{out.stem}_ir.json")
        ir_path.write_text(json.dumps(sticks))
        std = sticks.get("intensity_km_mol_std") or [None] * len(sticks["wavenumber_cm"])
        for nu, a, sd in zip(sticks["wavenumber_cm"], sticks["intensity_km_mol"], std, strict=True):
            print(f"  {nu:9.1f} cm⁻¹  {a:10.3f}" + ("" if sd is None else f" ± {sd:.3f}") + " km/mol")
        print(f"harmonic IR sticks -> {ir_path}")
