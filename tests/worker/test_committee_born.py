"""Born charges (derivatives=true) of a registered committee model through the worker's
task bodies: each structure's Z* is the members' mean, with their std beside it."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from jobs.db import session_scope
from jobs.tables import Job, new_id

WATER = {"types": [0, 1, 1], "positions": [[0, 0, 0], [0.757, 0.586, 0], [-0.757, 0.586, 0]], "cell": None}
BENT = {"types": [0, 1, 1], "positions": [[0, 0, 0.1], [0.8, 0.5, 0], [-0.7, 0.6, 0]], "cell": None}


def test_predict_job_with_a_committee_writes_mean_born_charges_and_their_spread(ctx: dict[str, Any]) -> None:
    from jobs.layout import model_file
    from model.checkpoint import save_checkpoint
    from model.committee import load_predictor, save_committee
    from model.dipole_derivatives import born_charges
    from tests.model.conftest import tiny_model
    from worker.predict import born_structures
    from worker.tasks import predict_job_task

    model_id = "mdl-committeeborn"
    path = model_file(ctx["root"], model_id)
    path.parent.mkdir(parents=True)
    members = []
    for seed in (1, 2):
        members.append(path.parent / f"m{seed}.pt")
        save_checkpoint(members[-1], tiny_model("dipole", seed=seed, sel_type=[0]))
    save_committee(path, members)
    job_id = new_id("job")
    with session_scope(ctx["db"]) as s:
        s.add(Job(id=job_id, kind="predict", owner_id=ctx["owner_id"], queue="batch", max_attempts=3,
                  inputs={"model_id": model_id, "structures": 2, "atoms": 6, "derivatives": True}))
    folder = ctx["root"] / "jobs" / job_id
    folder.mkdir(parents=True)
    (folder / "structures.json").write_text(json.dumps([WATER, BENT]))
    assert predict_job_task.run(job_id) == "succeeded"
    stored = json.loads((folder / "predictions.json").read_text())
    assert stored["committee_size"] == 2

    committee = load_predictor(path)
    coord = np.array([WATER["positions"], BENT["positions"]], dtype=float)
    ref = born_charges(committee, coord, [0, 1, 1])
    assert ref.z_std is not None and ref.z_std.max() > 1e-4  # the members disagree
    for k, row in enumerate(stored["results"]):
        np.testing.assert_allclose(row["born_charges"], ref.z[k], rtol=0, atol=1e-12)
        np.testing.assert_allclose(row["born_charges_std"], ref.z_std[k], rtol=0, atol=1e-12)
        assert row["sum_rule_violation"] < 1e-10
    # the synchronous path's rows (the api maps z_std to born_charges_std)
    sync = born_structures(committee, [WATER])
    np.testing.assert_allclose(sync[0]["z_std"], ref.z_std[0], rtol=0, atol=1e-12)
