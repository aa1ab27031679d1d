"""A harmonic point-charge triatomic for known-answer tests of spectra and dipole derivatives.

Three atoms joined by central springs (a rotation-invariant Hessian: 3 vibrations, 6 zero
modes), charges q_i: the dipole M = Σ q_i r_i is linear, so the Born charges are q_i·1 and
the harmonic intensities are exact. Units: Å, amu, fs, eV/Å², e.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from model.spectra_units import AMU, C_CM_PER_FS, E_CHARGE, K_B

EV_PER_A2_AMU_IN_FS2 = E_CHARGE / (1e-20 * AMU) * 1e-30  # eV/(Å²·amu) in fs⁻²

POSITIONS = np.array([[0.0, 0.0, 0.0], [0.95, 0.60, 0.0], [-0.90, 0.62, 0.05]])  # Å, O H H-like
MASSES = np.array([16.0, 1.008, 2.014])  # an HDO-like molecule: distinct modes
CHARGES = np.array([-0.8, 0.4, 0.4])
SPRINGS = {(0, 1): 48.0, (0, 2): 40.0, (1, 2): 6.0}  # eV/Å²

F64 = NDArray[np.float64]


def kt_amu(temperature_k: float) -> float:
    """k_B T in amu·Å²/fs²."""
    return K_B * temperature_k / (AMU * 1e10)


def hessian(positions: F64 = POSITIONS) -> F64:
    n = positions.shape[0]
    h = np.zeros((3 * n, 3 * n))
    for (a, b), k in SPRINGS.items():
        u = positions[b] - positions[a]
        u /= np.linalg.norm(u)
        block = k * np.outer(u, u)
        for i, j, s in ((a, a, 1), (b, b, 1), (a, b, -1), (b, a, -1)):
            h[3 * i:3 * i + 3, 3 * j:3 * j + 3] += s * block
    return h


@dataclass
class Modes:
    wavenumber_cm: F64  # [3] vibrational modes
    omega_fs: F64  # [3] rad/fs
    eigvec: F64  # [9, 3] mass-weighted, orthonormal columns
    cartesian: F64  # [3, 3 atoms, 3] Cartesian displacement patterns e/√m


def normal_modes() -> Modes:
    m = np.repeat(MASSES, 3)
    dyn = hessian() / np.sqrt(np.outer(m, m))
    lam, vec = np.linalg.eigh(dyn)
    vib = lam > 1e-6 * lam.max()
    assert vib.sum() == 3
    omega = np.sqrt(lam[vib] * EV_PER_A2_AMU_IN_FS2)
    e = vec[:, vib]
    cart = (e / np.sqrt(m)[:, None]).T.reshape(3, 3, 3)
    return Modes(omega / (2 * np.pi * C_CM_PER_FS), omega, e, cart)


def dmu_dq(modes: Modes) -> F64:
    """[3 modes, 3] ∂μ/∂Q_k = Σ_i q_i e_ik/√m_i in e/√amu."""
    z = np.kron(CHARGES, np.ones(3)) / np.sqrt(np.repeat(MASSES, 3))  # [9]
    return np.stack([(z * modes.eigvec[:, k]).reshape(3, 3).sum(axis=0) for k in range(3)])


def md(n_traj: int, n_frames: int, dt_fs: float, temperature_k: float, *, seed: int = 0,
       equipartition: bool = False, substeps: int = 4) -> F64:
    """Velocity-Verlet trajectories [n_traj, n_frames, 3 atoms, 3] of the harmonic molecule,
    started from vibrational Boltzmann samples (or, with ``equipartition``, from exactly
    k_B T per mode with random phases); no rotation or translation."""
    rng = np.random.default_rng(seed)
    modes = normal_modes()
    kt = kt_amu(temperature_k)
    w = modes.omega_fs
    if equipartition:
        phase = rng.uniform(0, 2 * np.pi, size=(n_traj, 3))
        amp = np.sqrt(2 * kt) / w
        q, qdot = amp * np.cos(phase), -amp * w * np.sin(phase)
    else:
        q, qdot = rng.normal(size=(n_traj, 3)) * np.sqrt(kt) / w, rng.normal(size=(n_traj, 3)) * np.sqrt(kt)
    inv_sqrt_m = 1.0 / np.sqrt(np.repeat(MASSES, 3))
    x = (q @ modes.eigvec.T) * inv_sqrt_m  # [n, 9] displacements
    v = (qdot @ modes.eigvec.T) * inv_sqrt_m
    acc_of = hessian() * EV_PER_A2_AMU_IN_FS2 / np.repeat(MASSES, 3)[:, None]  # a = -(H/m) x
    h = dt_fs / substeps
    out = np.empty((n_traj, n_frames, 9))
    a = -x @ acc_of.T
    for f in range(n_frames):
        out[:, f] = x
        for _ in range(substeps):
            v += 0.5 * h * a
            x += h * v
            a = -x @ acc_of.T
            v += 0.5 * h * a
    return out.reshape(n_traj, n_frames, 3, 3) + POSITIONS


def dipoles(traj: F64) -> F64:
    """M = Σ q_i r_i, [..., 3]."""
    return np.einsum("...ij,i->...j", traj, CHARGES)
