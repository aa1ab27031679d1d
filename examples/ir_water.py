"""Demo: the IR spectrum of liquid water with a dptensor dipole model.

1. ``dptensor train`` on the example Wannier-centroid dipole data (the example input
   unchanged except for the system paths and, optionally, the number of steps);
2. two short classical MDs of the example's 64-water box (12.16 Å, periodic) with flexible
   water force fields (examples/water_ff.py): SPC/Fw as published (harmonic O–H bonds) and
   SPC/Fw with anharmonic (Morse) O–H bonds; Langevin equilibration at 300 K, then NVE,
   0.5 fs steps, a frame every 1 fs, written as ASE .traj files;
3. ``dptensor spectrum`` on each trajectory in Wannier mode, in absolute units (n(ω)α(ω) in
   cm⁻¹ with V from the periodic cell) with band integrals. The example's labels Δ_O are the
   *sum* of the four Wannier centres' displacements from their oxygen (checked below: with
   that reading the molecules of the training data have a dipole of 3.09 D, as DFT liquid
   water; read as the centroid, 5.55 D), so M = Σ_H r_H − 2 Σ_O (r_O + Δ_O), i.e. ionic
   charges O = 0, H = 1 and q_W = −2 (O⁶⁺ and its four doubly occupied centres, −8 e in all);
4. a plot (docs/ir_water.png) of the absolute spectra next to the measured peak positions
   and magnitudes of liquid water (EXPERIMENT, with the source), the spectra as JSON
   (docs/ir_water.json: Morse bonds, docs/ir_water_harmonic.json: SPC/Fw as published) and
   the comparison (docs/ir_water_comparison.json).

    python examples/ir_water.py                 # ~2 min on 2 cores
    python examples/ir_water.py --steps 500 --ps 2 --out /tmp/ir --png /tmp/ir/ir.png --json /tmp/ir/ir.json

The model is evaluated with periodic boundaries, although the example data are flagged
non-periodic (``nopbc``): every molecule then sees a full liquid environment, like the
molecules inside the training boxes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WATER = REPO.parent / "shared" / "data" / "water_tensor"
if not WATER.is_dir():
    WATER = Path("/work/shared/data/water_tensor")
# Small models run faster on one thread than on several busy ones (OpenMP spinning).
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Liquid water at 25 °C, experiment: band maximum ν̃ (cm⁻¹) and the imaginary refractive index k
# there, from the optical constants of Bertie & Lan, Appl. Spectrosc. 50, 1047 (1996) and Hale &
# Querry, Appl. Opt. 12, 555 (1973) (values rounded; the libration is a broad maximum of k between
# ~560 and 700 cm⁻¹). The absorption coefficient is α = 4πν̃k; n ≈ 1.33 ± 0.1 near these bands.
EXPERIMENT = {
    "libration": {"wavenumber_cm": 620.0, "k": 0.42},
    "bend": {"wavenumber_cm": 1645.0, "k": 0.13},
    "combination": {"wavenumber_cm": 2130.0, "k": None},
    "O–H stretch": {"wavenumber_cm": 3404.0, "k": 0.272},
}
N_REFRACTIVE = 1.33
EXPERIMENT_SOURCE = ("J. E. Bertie, Z. Lan, Appl. Spectrosc. 50, 1047 (1996); G. M. Hale, M. R. Querry, "
                     "Appl. Opt. 12, 555 (1973); n·α = 4πν̃·k·n with n ≈ 1.33")
BANDS = {name: e["wavenumber_cm"] for name, e in EXPERIMENT.items()}
WINDOWS = {"libration": (300, 1200), "bend": (1200, 2000), "combination": (2000, 2800), "O–H stretch": (2800, 4200)}


def dptensor(*args: str) -> None:
    exe = shutil.which("dptensor")
    cmd = [exe] if exe else [sys.executable, "-m", "app.cli"]
    print("$ dptensor " + " ".join(args), flush=True)
    subprocess.run([*cmd, *args], check=True, cwd=REPO)


def train(out: Path, steps: int | None) -> Path:
    model = out / "train" / "model.pt"
    if model.is_file():
        print(f"reusing {model}")
        return model
    raw = json.loads((WATER / "dipole" / "dipole_input_torch.json").read_text())
    for key in ("training_data", "validation_data"):
        data = raw["training"][key]
        data["systems"] = [str((WATER / "dipole" / s).resolve()) for s in data["systems"]]
    if steps is not None:
        raw["training"]["numb_steps"] = steps
    (out / "input.json").write_text(json.dumps(raw, indent=1))
    dptensor("train", str(out / "input.json"), "--output", str(out / "train"), "--device", "cpu")
    return model


def run_md(path: Path, bond: str, equil_ps: float, prod_ps: float, seed: int) -> Path:
    from ase import Atoms, units
    from ase.io.trajectory import Trajectory
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    sys.path.insert(0, str(HERE))
    from water_ff import FlexibleWater

    if path.is_file():
        print(f"reusing {path}")
        return path
    system = WATER / "dipole" / "training_data_reformat" / "global_system"
    coord = np.load(system / "set.000" / "coord.npy")[0].reshape(-1, 3)
    box = np.load(system / "set.000" / "box.npy")[0].reshape(3, 3)
    names = (system / "type_map.raw").read_text().split()
    symbols = [names[int(t)] for t in (system / "type.raw").read_text().split()]
    atoms = Atoms(symbols, positions=coord, cell=box, pbc=True)
    atoms.calc = FlexibleWater(bond=bond)
    with warnings.catch_warnings():  # renamed in recent ASE; this name works from 3.23 on
        warnings.simplefilter("ignore", DeprecationWarning)
        MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(seed))
    Stationary(atoms)
    step = 0.5 * units.fs
    t0 = time.monotonic()
    Langevin(atoms, step, temperature_K=300, friction=0.02 / units.fs, fixcm=False,
             rng=np.random.default_rng(seed + 1)).run(round(equil_ps * 2000))
    print(f"{bond} O–H bonds: equilibrated {equil_ps} ps at 300 K (Langevin) in {time.monotonic() - t0:.0f} s; "
          f"T = {atoms.get_temperature():.0f} K", flush=True)
    nve = VelocityVerlet(atoms, step)
    e0 = atoms.get_total_energy()
    partial = path.with_suffix(".partial.traj")
    with Trajectory(partial, "w", atoms) as traj:
        nve.attach(traj.write, interval=2)  # a frame every 1 fs
        nve.run(round(prod_ps * 2000))
    drift = (atoms.get_total_energy() - e0) / len(atoms) * 1000
    print(f"NVE {prod_ps} ps: T = {atoms.get_temperature():.0f} K, energy drift {drift:+.2f} meV/atom; "
          f"{time.monotonic() - t0:.0f} s in all", flush=True)
    partial.rename(path)
    return path


def experiment_n_alpha(name: str) -> float | None:
    e = EXPERIMENT[name]
    k = e["k"]
    return None if k is None else N_REFRACTIVE * 4.0 * np.pi * e["wavenumber_cm"] * k


def dipole_convention() -> dict[str, float]:
    """Mean molecular dipole (D) of the training data's molecules under the two readings of Δ_O."""
    folder = WATER / "dipole" / "training_data_reformat" / "atomic_system" / "set.000"
    coord = np.load(folder / "coord.npy").reshape(-1, 192, 3)
    delta = np.load(folder / "atomic_dipole.npy").reshape(-1, 192, 3)[:, 0::3]
    edge = np.diagonal(np.load(folder / "box.npy").reshape(-1, 3, 3), axis1=1, axis2=2)[:, None, :]

    def mic(v: np.ndarray) -> np.ndarray:
        return v - edge * np.round(v / edge)

    oh = mic(coord[:, 1::3] - coord[:, 0::3]) + mic(coord[:, 2::3] - coord[:, 0::3])
    debye = 0.208_194_34  # e·Å
    return {"sum of the 4 centres (q_W = -2)": float(np.linalg.norm(oh - 2 * delta, axis=-1).mean() / debye),
            "centroid (q_W = -8)": float(np.linalg.norm(oh - 8 * delta, axis=-1).mean() / debye)}


def point_charge_spectrum(traj: Path, bands: str) -> dict:
    """The same trajectory's IR with SPC/Fw's own fixed charges (O −0.82, H +0.41), no model:
    what the dynamics alone gives, to read the model's intensities against."""
    from ase.io import read

    sys.path.insert(0, str(REPO))
    from model.spectra import SpectrumOptions, ir_spectrum
    from model.spectra_units import parse_bands
    from model.trajectory import unwrap_positions

    frames = read(str(traj), ":")
    pos = np.array([a.positions for a in frames])
    cells = np.array([a.cell.array for a in frames])
    charges = np.array([-0.82 if s == "O" else 0.41 for s in frames[0].get_chemical_symbols()])
    dipole = np.einsum("fij,i->fj", unwrap_positions(pos, cells, (True, True, True)), charges)
    opts = SpectrumOptions(dt_fs=1.0, max_corr_fs=1000.0, temperature_k=300.0, bands=parse_bands(bands))
    return ir_spectrum(dipole, opts, volume_a3=float(np.abs(np.linalg.det(cells)).mean()),
                       metadata={"dipole": "SPC/Fw fixed charges, no model"}).to_dict()


def compare(spectrum: dict) -> list[dict]:
    x = np.array(spectrum["wavenumber_cm"])
    y = np.array(spectrum["intensities"]["ir"])
    rows = []
    for name, (lo, hi) in WINDOWS.items():
        band = (x >= lo) & (x <= hi)
        i = int(np.argmax(y[band]))
        exp = experiment_n_alpha(name)
        integral = next(b["integral"] for b in spectrum["bands"] if (b["lo"], b["hi"]) == (lo, hi))
        rows.append({"band": name, "model_cm": float(x[band][i]), "model_n_alpha_cm": float(y[band][i]),
                     "model_integral_cm2": integral, "experiment_cm": EXPERIMENT[name]["wavenumber_cm"],
                     "experiment_n_alpha_cm": exp, "ratio": None if exp is None else float(y[band][i] / exp)})
    return rows


def plot(spectra: dict[str, dict], png: Path, steps: str, prod_ps: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=130)
    styles = {"morse": ("#1f5fa8", "-", "SPC/Fw, Morse O–H bonds"),
              "harmonic": ("#d0702a", "--", "SPC/Fw as published (harmonic O–H bonds)")}
    for bond, spectrum in spectra.items():
        x = np.array(spectrum["wavenumber_cm"])
        y = np.array(spectrum["intensities"]["ir"])
        keep = x <= 4500
        color, style, label = styles[bond]
        ax.plot(x[keep], y[keep], color=color, ls=style, lw=1.3, label=label)
        if "point_charges" in spectrum:
            pc = np.array(spectrum["point_charges"]["intensities"]["ir"])
            ax.plot(x[keep], pc[keep], color=color, ls=":", lw=0.9, alpha=0.8,
                    label=f"{label.split(',')[0]} trajectory, SPC/Fw fixed charges (no model)" if bond == "morse" else None)
    for name, e in EXPERIMENT.items():
        ax.axvline(e["wavenumber_cm"], color="0.6", ls=":", lw=0.9)
        value = experiment_n_alpha(name)
        if value is not None:
            ax.errorbar([e["wavenumber_cm"]], [value], yerr=[[value * 0.08], [value * 0.08]], fmt="ks", ms=4,
                        label="experiment (n·α at the band maximum)" if name == "bend" else None)
        ax.text(e["wavenumber_cm"] + 25, 0.97, name, rotation=90, va="top", fontsize=7, color="0.35",
                transform=ax.get_xaxis_transform())
    meta = next(iter(spectra.values()))["metadata"]
    ax.set_xlim(0, 4500)
    ax.set_yscale("log")
    ax.set_ylim(5e2, None)
    ax.set_xlabel("wavenumber (cm⁻¹)")
    ax.set_ylabel("absorption n(ω)α(ω) (cm⁻¹)")
    ax.set_title(f"Liquid water: dptensor dipole model (trained {steps} steps) on 64 H₂O, "
                 f"{prod_ps:g} ps classical MD", fontsize=9)
    ax.text(0.01, 0.03, f"Wannier dipole M(t), {meta['n_frames']} frames, V = {meta['volume_a3']:.0f} Å³, "
            f"{meta['window']} window τ = {meta['max_corr_fs']:.0f} fs (FWHM {meta['window_fwhm_cm']:.0f} cm⁻¹)\n"
            "squares: experiment, Bertie & Lan 1996 / Hale & Querry 1973 (n ≈ 1.33)",
            transform=ax.transAxes, ha="left", va="bottom", fontsize=7)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "ir_water", help="work folder (model, MD, results)")
    p.add_argument("--steps", type=int, help="training steps (default: the example input's 2000)")
    p.add_argument("--equil-ps", type=float, default=2.0)
    p.add_argument("--ps", type=float, default=4.0, help="NVE production length (ps)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--reuse-spectra", action="store_true", help="use the spectrum JSON files of an earlier run")
    p.add_argument("--png", type=Path, default=REPO / "docs" / "ir_water.png")
    p.add_argument("--json", type=Path, default=REPO / "docs" / "ir_water.json",
                   help="the Morse run; the harmonic one goes beside it (*_harmonic.json)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    model = train(args.out, args.steps)
    convention = dipole_convention()
    print("mean molecular dipole of the training data: " + ", ".join(f"{k}: {v:.2f} D" for k, v in convention.items()))
    spectra, comparison = {}, {}
    bands = ",".join(f"{lo}:{hi}" for lo, hi in WINDOWS.values())
    for bond in ("morse", "harmonic"):
        traj = run_md(args.out / f"md-{bond}.traj", bond, args.equil_ps, args.ps, args.seed)
        out = args.json if bond == "morse" else args.json.with_name(f"{args.json.stem}_harmonic.json")
        if not (args.reuse_spectra and out.is_file()):
            dptensor("spectrum", "-m", str(model), "-t", str(traj), "--kind", "ir", "--dt", "1",
                     "--dipole-mode", "wannier", "--charges", "O=0,H=1", "--q-w", "-2", "--temperature", "300",
                     "--max-corr", "1000", "--bands", bands, "-o", str(out), "--csv", str(args.out / f"ir-{bond}.csv"),
                     "--predictions", str(args.out / f"predictions-{bond}.npz"))
        spectra[bond] = json.loads(out.read_text())
        comparison[bond] = compare(spectra[bond])
        spectra[bond]["point_charges"] = point_charge_spectrum(traj, bands)
        comparison[f"{bond}, SPC/Fw fixed charges"] = compare(spectra[bond]["point_charges"])
        for key, row in [(k, r) for k in (bond, f"{bond}, SPC/Fw fixed charges") for r in comparison[k]]:
            exp = row["experiment_n_alpha_cm"]
            print(f"{key:>8} {row['band']:>12}: maximum {row['model_cm']:.0f} cm⁻¹ (exp. {row['experiment_cm']:.0f}), "
                  f"n·α {row['model_n_alpha_cm']:.3g} cm⁻¹" + (f" (exp. {exp:.3g}, ratio {row['ratio']:.2f})" if exp else ""))
    args.json.with_name("ir_water_comparison.json").write_text(json.dumps(
        {"experiment_source": EXPERIMENT_SOURCE, "n_refractive": N_REFRACTIVE, "molecular_dipole_debye": convention,
         "bands": comparison}, indent=1))
    config = args.out / "input.json"
    steps = json.loads(config.read_text())["training"]["numb_steps"] if config.is_file() else "?"
    plot(spectra, args.png, str(steps), args.ps)
    print(f"wrote {args.png} and {args.json} in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
