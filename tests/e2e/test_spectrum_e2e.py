"""Trajectory upload → spectrum job → spectrum JSON with the expected peak, through real
processes: the api (`dptensor serve --no-worker`), one worker (`dptensor worker`), Redis.

The trajectory is one water molecule turning rigidly at 1000 cm⁻¹; DeePMD-kit's reference
dipole model (uploaded as a model) is equivariant, so the predicted dipole turns with the
molecule and the IR spectrum must peak at 1000 cm⁻¹ (within one grid step)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kit import DEEPMD_REF, api_and_worker, rotating_water_xyz

pytestmark = pytest.mark.e2e
NU_CM, DT_FS, FRAMES = 1000.0, 2.0, 400


def test_trajectory_upload_to_spectrum(tmp_path: Path, redis_url: str) -> None:
    with api_and_worker(tmp_path, "predict,batch", broker_url=redis_url) as run:
        api = run.api
        r = api.http.post("/v1/models", files={"file": ("dipole.pt", (DEEPMD_REF / "dipole" / "model_slim.pt")
                                                        .read_bytes())})
        assert r.status_code == 201, r.text
        model_id = r.json()["id"]
        trajectory = rotating_water_xyz(FRAMES, DT_FS, NU_CM)
        r = api.http.post("/v1/jobs/spectrum", data={"model_id": model_id, "kind": "ir", "dt_fs": str(DT_FS),
                                                     "options": '{"window": "gaussian"}'},
                          files={"file": ("rotor.xyz", trajectory)})
        assert r.status_code == 202, r.text
        job = api.wait_job(r.json()["id"], timeout=120)
        assert job["status"] == "succeeded", job
        assert job["progress"]["step"] == job["progress"]["total"] == FRAMES
        assert job["progress"]["unit"] == "frames" and job["progress"]["rate"] > 0

        spectrum = api.http.get(f"/v1/jobs/{job['id']}/spectrum").json()
        x, y = np.array(spectrum["wavenumber_cm"]), np.array(spectrum["intensities"]["ir"])
        meta = spectrum["metadata"]
        assert abs(x[np.argmax(y)] - NU_CM) <= meta["grid_spacing_cm"], (x[np.argmax(y)], meta)
        assert (meta["model_id"], meta["n_frames"], meta["dt_fs"], meta["dipole_mode"]) == (
            model_id, FRAMES, DT_FS, "global")
        assert "units" in meta and meta["nyquist_cm"] == pytest.approx(8339.1, abs=0.1)  # 1/(2 Δt c)

        csv = api.http.get(f"/v1/jobs/{job['id']}/spectrum.csv")
        assert csv.headers["content-type"].startswith("text/csv")
        table = np.loadtxt(csv.text.splitlines()[1:], delimiter=",")
        np.testing.assert_allclose(table[:, 1], y, rtol=1e-8, atol=1e-12 * y.max())
        names = {f["name"] for f in api.http.get(f"/v1/jobs/{job['id']}/files").json()}
        assert {"trajectory.xyz", "predictions.npz", "spectrum.json", "spectrum.csv", "job.log"} <= names
        (tmp_path / "p.npz").write_bytes(api.http.get(f"/v1/jobs/{job['id']}/files/predictions.npz").content)
        with np.load(tmp_path / "p.npz") as npz:
            assert npz["global"].shape == (FRAMES, 3) and npz["atomic"].shape == (FRAMES, 3, 3)
            turn = np.linalg.norm(npz["global"], axis=1)
            assert turn.std() < 1e-6 * turn.mean()  # a rigid rotor: |dipole| is constant
