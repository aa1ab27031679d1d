"""Make the DeePMD-kit variant fixtures of tests/data/deepmd_variants/.

Trains small se_e2_a dipole/polar models with DeePMD-kit itself (a few steps — the
weights only need to be non-trivial) in configurations other than the two reference
models, and stores for each: the slim checkpoint (the layout of
shared/data/deepmd_reference: model_params + state_dict) and DeePMD-kit's own predictions
on a few frames, periodic and not. tests/model/test_deepmd_variants.py checks that dptensor
reproduces them. Run from our venv (it re-runs itself inside the DeePMD-kit venv of deepmd_env.py):

    .venv/bin/python bench/make_deepmd_variants.py            # the test fixtures
    .venv/bin/python bench/make_deepmd_variants.py --bench    # full-size fit_diag polar model → runs/
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from inputs import WATER_DIR

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "deepmd_variants"
WORK = Path(__file__).resolve().parent.parent / "runs" / "bench" / "variants"

SMALL_DESCRIPTOR = {"neuron": [4, 8, 16], "axis_neuron": 4, "seed": 3}
SMALL_FITTING = {"neuron": [16, 16], "seed": 5}
VARIANTS: dict[str, dict[str, Any]] = {
    # two-side embedding (one net per type pair), descriptor timestep, O only via fitting sel_type
    "dipole_two_side_resnet": {"task": "dipole", "descriptor": {"type_one_side": False, "resnet_dt": True},
                               "fitting_net": {"resnet_dt": False}},
    # diagonal polar head with a per-type scale, both types carry the tensor
    "polar_diag_scale_all_types": {"task": "polar", "exclude": [],
                                   "fitting_net": {"fit_diag": True, "scale": [2.0, 0.5], "shift_diag": True}},
    # full polar head without the diagonal shift, two-side, single precision
    "polar_full_noshift_f32": {"task": "polar", "descriptor": {"type_one_side": False, "precision": "float32"},
                               "fitting_net": {"fit_diag": False, "shift_diag": False, "precision": "float32"}},
    # another activation in the embedding nets
    "dipole_softplus": {"task": "dipole", "descriptor": {"activation_function": "softplus"}},
}
# Not a fixture: the example's full-size polar model with a diagonal head, for
# bench/bench_infer.py --model (issue: "fit_diag models should reach the dipole ratio").
BENCH_VARIANTS: dict[str, dict[str, Any]] = {
    "polar_fit_diag_full_size": {"task": "polar", "full_size": True, "fitting_net": {"fit_diag": True}},
}


def make_input(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    task = spec["task"]
    raw = json.loads((WATER_DIR / task / f"{task}_input_torch.json").read_text())
    if not spec.get("full_size"):
        raw["model"]["descriptor"].update(SMALL_DESCRIPTOR)
        raw["model"]["fitting_net"].update(SMALL_FITTING)
    raw["model"]["descriptor"].update(spec.get("descriptor", {}))
    raw["model"]["fitting_net"].update(spec.get("fitting_net", {}))
    raw["model"]["atom_exclude_types"] = spec.get("exclude", [1])
    if not raw["model"]["atom_exclude_types"]:
        del raw["model"]["atom_exclude_types"]
    for key in ("training_data", "validation_data"):
        data = raw["training"][key]
        data["systems"] = [str((WATER_DIR / task / s).resolve()) for s in data["systems"]]
    raw["training"].update(numb_steps=20, disp_freq=10, save_freq=20, seed=7)
    raw["learning_rate"]["start_lr"] = 0.005
    return raw


def frames() -> list[dict[str, Any]]:
    """Three periodic frames (polar data) and three open ones (dipole data)."""
    out = []
    for task, pbc in (("polar", True), ("dipole", False)):
        folder = WATER_DIR / task / "validation_data_reformat" / "global_system"
        coord = np.load(folder / "set.000" / "coord.npy")[:3].astype(np.float64).reshape(3, -1, 3)
        box = np.load(folder / "set.000" / "box.npy")[:3].astype(np.float64).reshape(3, 3, 3)
        atype = np.loadtxt(folder / "type.raw", dtype=np.int64)
        out.append({"name": "pbc" if pbc else "open", "coord": coord, "box": box if pbc else None, "atype": atype})
    return out


def inside(variants: dict[str, dict[str, Any]], out: Path) -> None:
    """Runs in the DeePMD-kit venv."""
    import torch
    from deepmd.infer.deep_dipole import DeepDipole
    from deepmd.infer.deep_polar import DeepPolar

    for name, spec in variants.items():
        work = WORK / name
        work.mkdir(parents=True, exist_ok=True)
        (work / "input.json").write_text(json.dumps(make_input(name, spec), indent=1))
        with (work / "train.log").open("w") as log:
            subprocess.run([str(Path(sys.executable).parent / "dp"), "--pt", "train", "input.json"], cwd=work,
                           stdout=log, stderr=subprocess.STDOUT, check=True)
        ck = torch.load(work / "model.ckpt.pt", map_location="cpu", weights_only=False)
        model = ck["model"]
        extra = model["_extra_state"]
        slim = {"format": "deepmd-kit-3.2.0-pt-state-dict", "deepmd_kit_version": "3.2.0",
                "model_params": extra["model_params"], "train_infos": extra["train_infos"],
                "state_dict": {k: v for k, v in model.items() if isinstance(v, torch.Tensor) and "._networks." not in k}}
        dest = out / name
        dest.mkdir(parents=True, exist_ok=True)
        torch.save(slim, dest / "model_slim.pt")
        evaluator = (DeepDipole if spec["task"] == "dipole" else DeepPolar)(str(work / "model.ckpt.pt"))
        arrays: dict[str, np.ndarray] = {}
        for f in frames():
            cells = None if f["box"] is None else f["box"].reshape(3, 9)
            glob = evaluator.eval(f["coord"].reshape(3, -1), cells, f["atype"], atomic=False)
            atomic = evaluator.eval(f["coord"].reshape(3, -1), cells, f["atype"], atomic=True)
            n = f["name"]
            arrays.update({f"{n}__coord": f["coord"], f"{n}__atype": f["atype"],
                           f"{n}__global": np.asarray(glob).reshape(3, -1),
                           f"{n}__atomic": np.asarray(atomic).reshape(3, f["coord"].shape[1], -1)})
            if f["box"] is not None:
                arrays[f"{n}__box"] = f["box"]
        np.savez(dest / "predictions.npz", **arrays)
        (dest / "variant.json").write_text(json.dumps({"name": name, **spec}, indent=1) + "\n")
        print(f"{name}: ok", flush=True)


def main() -> None:
    bench = "--bench" in sys.argv
    if "--inside" in sys.argv:
        inside(BENCH_VARIANTS if bench else VARIANTS, WORK if bench else OUT)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import deepmd_env

    deepmd_env.ensure_env()
    env = {**deepmd_env.deepmd_run_env(), "PYTHONPATH": str(Path(__file__).resolve().parent)}
    subprocess.run([str(deepmd_env.venv_python()), __file__, "--inside", *(["--bench"] if bench else [])],
                   env={**os.environ, **env}, check=True)


if __name__ == "__main__":
    main()
