"""Demo: the IR spectrum of liquid water with a dptensor dipole model.

1. ``dptensor train`` on the example Wannier-centroid dipole data (the example input
   unchanged except for the system paths and, optionally, the number of steps);
2. two short classical MDs of the example's 64-water box (12.16 Å, periodic) with flexible
   water force fields (examples/water_ff.py): SPC/Fw as published (harmonic O–H bonds) and
   SPC/Fw with anharmonic (Morse) O–H bonds; Langevin equilibration at 300 K, then NVE,
   0.5 fs steps, a frame every 1 fs, written as ASE .traj files;
3. ``dptensor spectrum`` on each trajectory in Wannier mode, M = Σ Z r + q_W Σ_O (r_O + Δ_O)
   with Z_O = 6, Z_H = 1, q_W = −8 (the model predicts Δ_O, each molecule's Wannier centroid
   relative to its oxygen);
4. a plot (docs/ir_water.png) and the spectra as JSON (docs/ir_water.json: Morse bonds,
   docs/ir_water_harmonic.json: SPC/Fw as published).

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

# Liquid water, experiment (docs/spectra.md): libration, bend, combination, O–H stretch
BANDS = {"libration": 680.0, "bend": 1645.0, "combination": 2130.0, "O–H stretch": 3400.0}


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


def plot(spectra: dict[str, dict], png: Path, steps: str, prod_ps: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=130)
    styles = {"morse": ("#1f5fa8", "-", "SPC/Fw, Morse O–H bonds"),
              "harmonic": ("#d0702a", "--", "SPC/Fw as published (harmonic O–H bonds)")}
    for bond, spectrum in spectra.items():
        x = np.array(spectrum["wavenumber_cm"])
        y = np.array(spectrum["intensities"]["ir"])
        keep = x <= 4500
        color, style, label = styles[bond]
        ax.plot(x[keep], y[keep] / y[keep].max(), color=color, ls=style, lw=1.3, label=label)
    for name, nu in BANDS.items():
        ax.axvline(nu, color="0.6", ls=":", lw=0.9)
        ax.text(nu + 25, 1.02, name, rotation=90, va="bottom", fontsize=7, color="0.35")
    meta = next(iter(spectra.values()))["metadata"]
    ax.set_xlim(0, 4500)
    ax.set_ylim(-0.03, 1.4)
    ax.set_xlabel("wavenumber (cm⁻¹)")
    ax.set_ylabel("IR absorption n(ω)α(ω), each normalised to its maximum", fontsize=8)
    ax.set_title(f"Liquid water: dptensor dipole model (trained {steps} steps) on 64 H₂O, "
                 f"{prod_ps:g} ps classical MD", fontsize=9)
    ax.text(0.505, 0.95, f"Wannier dipole M(t), {meta['n_frames']} frames\n{meta['window']} window, "
            f"τ = {meta['max_corr_fs']:.0f} fs\n(FWHM {meta['window_fwhm_cm']:.0f} cm⁻¹)\n"
            "dotted: experiment, liquid water", transform=ax.transAxes, ha="left", va="top", fontsize=7)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
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
    p.add_argument("--png", type=Path, default=REPO / "docs" / "ir_water.png")
    p.add_argument("--json", type=Path, default=REPO / "docs" / "ir_water.json",
                   help="the Morse run; the harmonic one goes beside it (*_harmonic.json)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    model = train(args.out, args.steps)
    spectra = {}
    for bond in ("morse", "harmonic"):
        traj = run_md(args.out / f"md-{bond}.traj", bond, args.equil_ps, args.ps, args.seed)
        out = args.json if bond == "morse" else args.json.with_name(f"{args.json.stem}_harmonic.json")
        dptensor("spectrum", "-m", str(model), "-t", str(traj), "--kind", "ir", "--dt", "1",
                 "--dipole-mode", "wannier", "--charges", "O=6,H=1", "--q-w", "-8", "--temperature", "300",
                 "--max-corr", "1000", "-o", str(out), "--csv", str(args.out / f"ir-{bond}.csv"),
                 "--predictions", str(args.out / f"predictions-{bond}.npz"))
        spectra[bond] = json.loads(out.read_text())
        x, y = np.array(spectra[bond]["wavenumber_cm"]), np.array(spectra[bond]["intensities"]["ir"])
        for lo, hi, name in ((300, 1200, "libration"), (1200, 2000, "bend"), (2800, 4200, "stretch")):
            band = (x >= lo) & (x <= hi)
            print(f"{bond:>8} {name:>9}: maximum at {x[band][np.argmax(y[band])]:.0f} cm⁻¹")
    config = args.out / "input.json"
    steps = json.loads(config.read_text())["training"]["numb_steps"] if config.is_file() else "?"
    plot(spectra, args.png, str(steps), args.ps)
    print(f"wrote {args.png} and {args.json} in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
