"""``dptensor spectrum``: IR / Raman spectrum of MD trajectories with a dipole / polarizability
model (-m), or of the trajectories' own reference labels (--labels), without the service (the
same pipeline as the service's spectrum jobs: model.spectrum_pipeline). Formulas, units and
conventions: docs/spectra.md."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from model.errors import ConfigError
from model.spectra_units import IR_UNITS, parse_bands
from model.spectrum_options import CORRECTIONS, OPTION_HELP, WINDOWS, Spectrum, parse_pairs

EXAMPLE = """examples:
  dptensor spectrum -m dipole.pt -t md.xyz --kind ir --dt 1 -o ir.json --csv ir.csv --plot ir.png
  dptensor spectrum -m dipole.pt -t md.lammpstrj --lammps-types 1=O,2=H --kind ir --dt 0.5 \\
      --dipole-mode wannier --charges O=6,H=1 --q-w -8 -o ir.json
  dptensor spectrum -m polar.pt -t run1.traj -t run2.traj --kind raman --dt 2 --csv raman.csv
  dptensor spectrum --kind ir --labels -t sys1 -t sys2 --dt 0.5 --units molar --molecules 64 \
      --bands 1000:2000,3000:4000 -o ir.json          # DFT dipole.npy labels, no model
"""


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The request options (the api's `options` JSON) given on the command line."""
    opts: dict[str, Any] = {}
    for name, key in (("temperature", "temperature_k"), ("window", "window"), ("max_corr", "max_corr_fs"),
                      ("zero_pad", "zero_pad"), ("correction", "correction"), ("freq_max", "freq_max_cm"),
                      ("derivative", "derivative"), ("laser", "laser_cm"), ("dipole_mode", "dipole_mode"),
                      ("q_w", "q_w"), ("format", "format"), ("index", "index"), ("max_frames", "max_frames"),
                      ("units", "units"), ("molecules", "molecules")):
        if getattr(args, name) is not None:
            opts[key] = getattr(args, name)
    if args.reduced:
        opts["raman_reduced"] = True
    if args.charges is not None:
        opts["ionic_charges"] = parse_pairs(args.charges, "--charges", float)
    if args.lammps_types is not None:
        opts["lammps_type_symbols"] = parse_pairs(args.lammps_types, "--lammps-types", str)
    if args.eps_inf is not None:
        opts["eps_inf"] = args.eps_inf
    if args.bands is not None:
        opts["bands"] = [list(b) for b in parse_bands(args.bands) or ()]
    if args.volume is not None:
        opts["volume_a3"] = args.volume if args.volume == "cell" else _float(args.volume, "--volume")
    return opts


def _float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{text!r} is neither a number nor 'cell'", path=what) from None


def _prediction_paths(path: str | None, n: int) -> list[Path | None]:
    if path is None:
        return [None] * n
    p = Path(path)
    return [p] if n == 1 else [p.with_name(f"{p.stem}-{i}{p.suffix or '.npz'}") for i in range(n)]


def plot_spectrum(spectrum: Spectrum, path: str | Path, title: str = "") -> Path:
    """A PNG of every channel against the wavenumber (matplotlib, imported only here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for name, values in spectrum.intensities.items():
        line = ax.plot(spectrum.wavenumber_cm, values, lw=1.2, label=name)[0]
        if spectrum.std is not None:  # a committee: mean ± std over members
            ax.fill_between(spectrum.wavenumber_cm, values - spectrum.std[name], values + spectrum.std[name],
                            color=line.get_color(), alpha=0.25, lw=0)
    ax.set_xlabel("wavenumber (cm⁻¹)")
    ax.set_ylabel(f"intensity ({spectrum.metadata.get('units', 'arb.')})", fontsize=8)
    ax.set_xlim(0, float(spectrum.wavenumber_cm[-1]))
    ax.set_title(title or f"{spectrum.metadata.get('kind', '').upper()} spectrum", fontsize=10)
    if len(spectrum.intensities) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _report_bands(spectrum: Spectrum) -> None:
    for band in spectrum.bands or []:
        err = f" ± {band['error']:.4g}" if band.get("error") is not None else ""
        rho = f", depolarisation ratio {band['depolarization_ratio']:.3f}" if "depolarization_ratio" in band else ""
        print(f"band {band['lo']:g}-{band['hi']:g} cm⁻¹: {band['integral']:.6g}{err} {band['unit']}{rho}",
              file=sys.stderr)


def _report_static(spectrum: Spectrum) -> None:
    static = spectrum.metadata.get("static")
    if static:
        err = f" ± {static['error']:.3g}" if static.get("error") is not None else ""
        print(f"static dielectric constant {static['eps_static']:.4g}{err} ({static['error_kind']}), ε∞ = "
              f"{static['eps_inf']:g}; ε'(0) by Kramers–Kronig {spectrum.metadata['eps_real_at_zero']:.4g}",
              file=sys.stderr)


def _write_outputs(args: argparse.Namespace, spectrum: Spectrum, title: str) -> None:
    text = json.dumps(spectrum.to_dict())
    if args.output == "-":
        print(text)
    else:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    if args.csv:
        Path(args.csv).write_text(spectrum.to_csv())
        print(f"wrote {args.csv}", file=sys.stderr)
    if args.plot:
        plot_spectrum(spectrum, args.plot, title)
        print(f"wrote {args.plot}", file=sys.stderr)


def cmd_spectrum(args: argparse.Namespace) -> int:
    from model.spectrum_labels import run_labels_spectrum
    from model.spectrum_parts import run_spectrum
    from model.spectrum_pipeline import parse_request

    request = parse_request(args.kind, args.dt, options_from_args(args), prefix="")
    names = ", ".join(Path(t).name for t in args.trajectory)
    if args.kind == "vdos":
        if args.model or args.labels:
            raise ConfigError("the VDOS needs only the trajectory (no model, no labels)", path="--kind")
        from model.vdos import run_vdos

        spectrum = run_vdos(args.trajectory, request)
        print(f"VDOS of {spectrum.metadata['n_frames']} frames, kinetic temperature "
              f"{spectrum.metadata['kinetic_temperature_k']:.0f} K, in {spectrum.metadata['units']}", file=sys.stderr)
        _report_bands(spectrum)
        _write_outputs(args, spectrum, f"VDOS · {names}")
        return 0
    if (args.model is None) == (not args.labels):
        raise ConfigError("give a model (-m) or --labels (the trajectories' own dipole/polarizability labels)",
                          path="--model")
    if args.labels:
        spectrum = run_labels_spectrum(args.trajectory, request)
        meta = spectrum.metadata
        print(f"{meta['n_frames']} frames of reference labels; {request.kind.upper()} in {meta['units']}", file=sys.stderr)
        _report_static(spectrum)
        _report_bands(spectrum)
        _write_outputs(args, spectrum, f"{request.kind.upper()} · labels · {names}")
        return 0
    from model.committee import load_predictor

    model = load_predictor(args.model, device=args.device or "cpu", precision=args.precision)
    model_name = "+".join(Path(m).name for m in args.model)
    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if tty:
            print(f"\rpredicted {done}/{total} frames", end="" if done < total else "\n", file=sys.stderr,
                  flush=True)

    result = run_spectrum(model, args.trajectory, request, model_id=model_name,
                          predictions=_prediction_paths(args.predictions, len(args.trajectory)),
                          batch_size=args.batch_size, progress=progress)
    spectrum = result.spectrum
    meta = spectrum.metadata
    print(f"{result.frames} frames of {result.atoms} atoms predicted in {result.predict_s:.2f} s "
          f"({result.frames_per_s:.1f} frames/s, chunks of {result.batch_size}); {request.kind.upper()} grid 0-{meta['freq_max_cm']:.0f} cm⁻¹ "
          f"every {meta['grid_spacing_cm']:.2f} cm⁻¹ (resolution {meta['resolution_cm']:.1f}, Nyquist "
          f"{meta['nyquist_cm']:.0f}), in {meta['units']}", file=sys.stderr)
    _report_bands(spectrum)
    _report_static(spectrum)
    for peak in spectrum.peaks or []:
        print(f"{peak['channel']} peak at {peak['mean_cm']:.1f} ± {peak['std_cm']:.1f} cm⁻¹ over "
              f"{len(peak['member_cm'])} members", file=sys.stderr)
    _write_outputs(args, spectrum, f"{request.kind.upper()} · {model_name} · {names}")
    return 0


def add_spectrum_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "spectrum", help="IR / Raman spectrum of MD trajectories (predicted dipoles / polarizabilities)",
        description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", action="append",
                   help="dipole model (IR) or polarizability model (Raman); a committee file or several -m "
                        "give mean ± std over members")
    p.add_argument("--labels", action="store_true",
                   help="no model: use the trajectories' own labels (DeePMD system with dipole.npy / "
                        "polarizability.npy, or an .npz time series)")
    p.add_argument("-t", "--trajectory", required=True, action="append",
                   help="extxyz, LAMMPS dump, ASE .traj or DeePMD system folder; repeat to average runs")
    p.add_argument("--kind", required=True, choices=["ir", "raman", "dielectric", "vdos"],
                   help="ir, raman, dielectric (ε(ω) and the static ε; periodic), vdos (no model)")
    p.add_argument("--dt", type=float, required=True, help="time between frames in fs (never guessed)")
    g = p.add_argument_group("trajectory")
    g.add_argument("--format", help="extxyz, lammps-dump-text, traj, deepmd/npy (default: from the name)")
    g.add_argument("--index", help="frames to use, ASE slice syntax (e.g. '1000:' skips 1000)")
    g.add_argument("--max-frames", type=int)
    g.add_argument("--lammps-types", help="elements of LAMMPS atom types, e.g. 1=O,2=H")
    g = p.add_argument_group("spectrum (docs/spectra.md)")
    g.add_argument("--temperature", type=float, help="K (default 300)")
    g.add_argument("--window", choices=WINDOWS, help="lag window (default gaussian)")
    g.add_argument("--max-corr", type=float, help="correlation length, fs (default min(half the run, 2000))")
    g.add_argument("--zero-pad", type=float, help="zero padding factor (default 4)")
    g.add_argument("--correction", choices=CORRECTIONS, help="quantum correction (default harmonic)")
    g.add_argument("--freq-max", type=float, help="cm⁻¹ (default min(Nyquist, 5000))")
    g.add_argument("--derivative", action=argparse.BooleanOptionalAction, default=None,
                   help="derivative form (default: yes for IR, no for Raman)")
    g.add_argument("--reduced", action="store_true", help="Raman: reduced spectrum")
    g.add_argument("--laser", type=float, help="Raman: laser wavenumber (cm⁻¹) for Stokes intensities")
    g.add_argument("--volume", help="IR: " + OPTION_HELP["volume_a3"])
    g.add_argument("--units", choices=IR_UNITS, help="IR: " + OPTION_HELP["units"].removeprefix("IR: "))
    g.add_argument("--molecules", type=int, help="IR: " + OPTION_HELP["molecules"].removeprefix("IR: "))
    g.add_argument("--eps-inf", type=float, help="dielectric: " + OPTION_HELP["eps_inf"].removeprefix("dielectric: "))
    g.add_argument("--bands", help="integrate bands LO:HI[,LO:HI…] in cm⁻¹ (reported as \"bands\" in the JSON)")
    g = p.add_argument_group("IR dipole")
    g.add_argument("--dipole-mode", choices=["global", "wannier"],
                   help="global: the model's dipole (default); wannier: Σ Z r + q_W Σ_sel (r + Δ)")
    g.add_argument("--charges", help="wannier: ionic charges by element, e.g. O=6,H=1 (JSON: ionic_charges)")
    g.add_argument("--q-w", type=float, help="wannier: charge of a Wannier centroid (water: -8)")
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", default="-", help="spectrum JSON (default: stdout)")
    g.add_argument("--csv", help="spectrum as CSV")
    g.add_argument("--predictions", help="per-frame tensors .npz (global [nf,dim], atomic [nf,nat,dim])")
    g.add_argument("--plot", help="PNG plot (needs matplotlib)")
    g = p.add_argument_group("device")
    g.add_argument("--batch-size", type=int, help="frames per chunk (default: sized to the device)")
    g.add_argument("--precision", choices=["float64", "float32"])
    g.add_argument("--device", help="cpu, cuda, cuda:1 (default cpu)")
    p.set_defaults(func=cmd_spectrum)
    return p
