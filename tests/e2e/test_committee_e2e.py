"""A committee through the service, real processes (api, worker, Redis): training with
"committee": 2 → one registered committee model with per-member learning curves →
predictions with std and deviations (sync, job on a system: npz + CSV), Born charges with
their spread → a selection job
(candidates as a DeePMD system) → a spectrum job whose spectrum carries the members' std band."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from kit import api_and_worker, rotating_water_xyz, tiny_input

pytestmark = pytest.mark.e2e


def test_committee_training_prediction_and_spectrum(tmp_path: Path, redis_url: str, water_tgz: Path) -> None:
    from model.committee import Committee, load_predictor
    from model.data import load_system
    from model.dipole_derivatives import born_charges
    from model.inference import predict

    with api_and_worker(tmp_path, "train,predict,batch", broker_url=redis_url) as run:
        api, data = run.api, run.data
        r = api.http.post("/v1/datasets", files={"file": ("water.tgz", water_tgz.read_bytes())})
        assert r.status_code == 201, r.text
        ds = r.json()
        raw = tiny_input(f"dataset:{ds['id']}/train", f"dataset:{ds['id']}/valid", numb_steps=10)
        bad = api.http.post("/v1/jobs/train", json={**raw, "committee": 0})
        assert bad.status_code == 422 and "committee" in bad.text
        r = api.http.post("/v1/jobs/train", json={**raw, "committee": 2})
        assert r.status_code == 202, r.text
        job = api.wait_job(r.json()["id"], timeout=300)
        assert job["status"] == "succeeded", job
        assert job["progress"]["step"] == job["progress"]["total"] == 20  # 2 members × 10 steps
        assert job["result"]["committee_size"] == 2 and len(job["result"]["member_metrics"]) == 2
        for member in (0, 1):
            rows = api.http.get(f"/v1/jobs/{job['id']}/lcurve", params={"member": member}).json()["rows"]
            assert rows[-1]["step"] == 10
        assert api.http.get(f"/v1/jobs/{job['id']}/lcurve", params={"member": 2}).status_code == 404
        model = api.http.get(f"/v1/models/{job['model_id']}").json()
        assert model["committee_size"] == 2 and model["info"]["committee_size"] == 2

        (tmp_path / "c.pt").write_bytes(api.http.get(f"/v1/models/{model['id']}/download").content)
        committee = load_predictor(tmp_path / "c.pt")
        assert isinstance(committee, Committee) and committee.size == 2
        system = load_system(data / "datasets" / ds["id"] / "files" / "valid" / "global_system", type_map=["O", "H"])
        structures = [{"types": system.atype.tolist(), "positions": system.coord[i].tolist()} for i in range(3)]
        r = api.http.post(f"/v1/models/{model['id']}/predict", json={"structures": structures})
        assert r.status_code == 200, r.text
        answer = r.json()
        ref = predict(committee, system.coord[:3], system.atype)
        assert ref.member_global is not None
        assert answer["committee_size"] == 2
        got = answer["results"]
        np.testing.assert_allclose([g["global_tensor"] for g in got], ref.global_tensor, atol=1e-10)
        np.testing.assert_allclose([g["global_std"] for g in got], ref.member_global.std(axis=0), atol=1e-10)
        assert all(g["devi_global"] > 0 and g["devi_atomic_max"] > 0 for g in got)
        # Born charges: the members' mean and their spread
        r = api.http.post(f"/v1/models/{model['id']}/predict", json={"structures": structures[:1], "derivatives": True})
        assert r.status_code == 200, r.text
        born = born_charges(committee, system.coord[:1], system.atype.tolist())
        assert born.z_std is not None
        [row] = r.json()["results"]
        np.testing.assert_allclose(row["born_charges"], born.z[0], rtol=0, atol=1e-10)
        np.testing.assert_allclose(row["born_charges_std"], born.z_std[0], rtol=0, atol=1e-10)

        r = api.http.post(f"/v1/models/{model['id']}/predict", json={"system": f"dataset:{ds['id']}/valid/global_system"})
        assert r.status_code == 202, r.text
        pjob = api.wait_job(r.json()["id"])
        assert pjob["status"] == "succeeded", pjob
        csv = api.http.get(f"/v1/jobs/{pjob['id']}/files/predictions.csv").text.splitlines()
        assert csv[0].endswith("devi_global,devi_atomic_max") and len(csv) == system.nframes + 1

        r = api.http.post("/v1/jobs/select", data={"model_id": model["id"], "lo": "0", "hi": "1e9", "max_frames": "5",
                                                   "dataset_id": ds["id"], "system": "valid/global_system"})
        assert r.status_code == 202, r.text
        sel = api.wait_job(r.json()["id"])
        assert sel["status"] == "succeeded", sel
        assert (sel["result"]["candidates"], sel["result"]["selected"], sel["result"]["failed"]) == (
            system.nframes, 5, 0)
        (tmp_path / "cand.tgz").write_bytes(api.http.get(f"/v1/jobs/{sel['id']}/files/candidates.tar.gz").content)
        with tarfile.open(tmp_path / "cand.tgz") as tar:
            tar.extractall(tmp_path / "cand", filter="data")
        assert load_system(tmp_path / "cand" / "candidates", type_map=["O", "H"]).nframes == 5
        bad = api.http.post("/v1/jobs/select", data={"model_id": model["id"], "lo": "1", "hi": "0.5",
                                                     "dataset_id": ds["id"], "system": "valid/global_system"})
        assert bad.status_code == 422 and "hi" in bad.text

        trajectory = rotating_water_xyz(200, 2.0, 1000.0)
        r = api.http.post("/v1/jobs/spectrum", data={"model_id": model["id"], "kind": "ir", "dt_fs": "2"},
                          files={"file": ("rotor.xyz", trajectory)})
        assert r.status_code == 202, r.text
        sjob = api.wait_job(r.json()["id"], timeout=120)
        assert sjob["status"] == "succeeded", sjob
        assert sjob["result"]["committee_size"] == 2 and sjob["result"]["peaks"]
        spectrum = api.http.get(f"/v1/jobs/{sjob['id']}/spectrum").json()
        std = np.array(spectrum["intensities_std"]["ir"])
        assert std.shape == (len(spectrum["wavenumber_cm"]),) and std.max() > 0
        header = api.http.get(f"/v1/jobs/{sjob['id']}/spectrum.csv").text.splitlines()[0]
        assert header == "wavenumber_cm,ir,ir_std"
