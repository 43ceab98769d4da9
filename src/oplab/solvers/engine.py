"""The mean-value diesel engine model with EGR and VGT of Wahlstrom & Eriksson (2011).

J. Wahlstrom and L. Eriksson, "Modelling diesel engines with a variable-geometry turbocharger and
exhaust gas recirculation by optimization of model parameters for capturing non-linear system
dynamics", Proc. IMechE Part D, J. Automobile Engineering 225(7):960-986, 2011
(doi:10.1177/0954407011398177; the earlier report LiTH-ISY-R-2882, 2009). A heavy-duty six-cylinder
12.7 litre Scania engine. It is the model behind the neural-operator digital twins of Kumar,
Goswami, Karniadakis et al. ("Real-time prediction of gas flow dynamics in diesel engines using a
deep neural operator framework"; "From PINNs to neural operators: a digital twin of a diesel
engine").

States (eight; SI units)::

    x = (p_im [Pa], p_em [Pa], X_Oim [-], X_Oem [-], omega_t [rad/s],
         ut_egr1 [%], ut_egr2 [%], ut_vgt [%])

inputs ``u = (u_delta [mg/cycle/cylinder], u_egr [%], u_vgt [%], n_e [rpm])``.

Manifolds (isothermal intake, T_im constant; exhaust at the temperature T_em of the gas leaving
the cylinders)::

    dp_im/dt  = R_a T_im / V_im (W_c + W_egr - W_ei)
    dp_em/dt  = R_e T_em / V_em (W_eo - W_t - W_egr)
    dX_Oim/dt = R_a T_im / (p_im V_im) ((X_Oem - X_Oim) W_egr + (X_Oc - X_Oim) W_c)
    dX_Oem/dt = R_e T_em / (p_em V_em) (X_Oe - X_Oem) W_eo

Cylinder: volumetric efficiency and flows (W_f from the injected mass per cycle and cylinder)::

    eta_vol = c_vol1 sqrt(p_im) + c_vol2 sqrt(n_e) + c_vol3
    W_ei = eta_vol p_im n_e V_d / (120 R_a T_im),   W_f = 1e-6 u_delta n_e n_cyl / 120
    W_eo = W_f + W_ei,   X_Oe = max(0, (W_ei X_Oim - W_f (O/F)_s) / W_eo),   (O/F)_s = AFs X_Oc
    lambda_O = W_ei X_Oim / (W_f (O/F)_s)

Exhaust temperature: the seiliger-cycle model with residual gas, an algebraic loop in
(x_r, T_1) solved here by fixed-point iteration (``TE_ITERATIONS`` sweeps from x_r = 0,
T_1 = T_im; the contraction is strong, x_r ~ 0.03, so the loop is converged to round-off; the
Simulink model takes one sweep per time step from the previous step's values)::

    q_in = W_f q_HV (1 - x_r) / (W_f + W_ei),     Pi_e = p_em / p_im
    x_p  = 1 + q_in x_cv / (c_va T_1 r_c^(g_a - 1))
    x_v  = 1 + q_in (1 - x_cv) / (c_pa (q_in x_cv / c_va + T_1 r_c^(g_a - 1)))
    x_r  = Pi_e^(1/g_a) x_p^(-1/g_a) / (r_c x_v)
    T_e  = eta_sc Pi_e^(1 - 1/g_a) r_c^(1 - g_a) x_p^(1/g_a - 1)
           (q_in ((1 - x_cv)/c_pa + x_cv/c_va) + T_1 r_c^(g_a - 1))
    T_1  = x_r T_e + (1 - x_r) T_im

and the heat loss in the exhaust pipes ``T_em = T_amb + (T_e - T_amb) exp(-h_tot pi d_pipe
l_pipe n_pipe / (W_eo c_pe))``.

EGR valve (a compressible restriction without reverse flow; actuator with delay tau_degr and the
overshoot of two first-order systems)::

    Pi_egr = clip(p_im / p_em, Pi_egropt, 1),   Psi_egr = 1 - ((1 - Pi_egr)/(1 - Pi_egropt) - 1)^2
    W_egr = A_egrmax f_egr(ut_egr) p_em Psi_egr / sqrt(T_em R_e)
    f_egr(u) = c_egr1 u^2 + c_egr2 u + c_egr3 for u <= -c_egr2/(2 c_egr1), else its maximum
    dut_egr1/dt = (u_egr(t - tau_degr) - ut_egr1) / tau_egr1
    dut_egr2/dt = (u_egr(t - tau_degr) - ut_egr2) / tau_egr2
    ut_egr = K_egr ut_egr1 - (K_egr - 1) ut_egr2

Turbocharger (Pi_t = p_amb / p_em)::

    domega_t/dt = (P_t eta_m - P_c) / (J_t omega_t)
    W_t = A_vgtmax p_em f_Pit(Pi_t) f_vgt(ut_vgt) / sqrt(T_em R_e),  f_Pit = sqrt(1 - Pi_t^K_t)
    f_vgt(u) = c_f2 + c_f1 sqrt(max(0, 1 - ((u - c_vgt2)/c_vgt1)^2))
    P_t eta_m = eta_tm W_t c_pe T_em (1 - Pi_t^(1 - 1/g_e))
    eta_tm = eta_tmmax - c_m (BSR - BSR_opt)^2,   BSR = R_t omega_t / sqrt(2 c_pe T_em (1 - Pi_t^(1-1/g_e)))
    c_m = c_m1 max(0, omega_t - c_m2)^c_m3 for omega_t >= w_tlin,
          c_m(w_tlin) (omega_t - c_m2) / (w_tlin - c_m2) between c_m2 and w_tlin, 0 below
          (the linear piece: our reading of the LiU parameters w_tlin and c_mlin = c_m(w_tlin))
    dut_vgt/dt = (u_vgt(t - tau_dvgt) - ut_vgt) / tau_vgt

Compressor (Pi_c = max(1, p_im / p_amb); flow from the dimensionless head Psi_c and flow Phi_c,
efficiency a quadratic form around its optimum)::

    Psi_c = 2 c_pa T_amb (Pi_c^(1 - 1/g_a) - 1) / (R_c^2 omega_t^2)
    Phi_c = sqrt(max(0, (1 - c_Psi1 (Psi_c - c_Psi2)^2) / c_Phi1)) + c_Phi2
    c_Psi1 = c_wPsi1 w^2 + c_wPsi2 w + c_wPsi3,  c_Phi1 = c_wPhi1 w^2 + c_wPhi2 w + c_wPhi3  (w = omega_t)
    W_c = p_amb pi R_c^3 omega_t Phi_c / (R_a T_amb)
    eta_c = eta_cmax - chi^T Q_c chi,  chi = (W_c - W_copt, (Pi_c - 1)^c_pi - pi_copt)
    P_c = W_c c_pa T_amb (Pi_c^(1 - 1/g_a) - 1) / eta_c

Safeguards (ours): the efficiencies are bounded below by :data:`ETA_MIN`; X_Oe is clipped at 0
(a rich mixture leaves no oxygen); the power bases are kept in their domains (pressures >= 1 kPa,
omega_t >= 1 rad/s, Pi_c >= 1, the turbine's pressure-ratio terms >= 0) so that a solver's trial
states never produce NaN. None is active at the steady states of the tests; in transients the
first two can be, for a moment (a fuel step faster than the turbocharger makes the mixture rich).

Parameter values: :class:`EngineParams`, each with its source. The right-hand side is written
once against a small array namespace (:data:`SCALAR` for Python floats, the fast path of
``solve_ivp``; :data:`NUMPY` for arrays; :data:`TORCH` for tensors, with gradients with respect to
states and parameters), so the simulator and the physics-informed identification
(:mod:`oplab.inverse.identify`) use the same equations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Callable

import numpy as np

#: the state names, in order
STATES = ("p_im", "p_em", "X_Oim", "X_Oem", "omega_t", "u_egr1", "u_egr2", "u_vgt_act")
#: the input names, in order
INPUTS = ("u_delta", "u_egr", "u_vgt", "n_e")
#: typical magnitudes of the states: absolute tolerances and scalings are relative to these
STATE_SCALE = np.array([1e5, 1e5, 0.2, 0.2, 1e4, 100.0, 100.0, 100.0])
#: fixed-point sweeps of the exhaust-temperature loop (x_r, T_1); converged to round-off
TE_ITERATIONS = 10
#: lower bound of the turbine and compressor efficiencies. The quadratic efficiency models turn
#: negative far from the region they were fitted in (a compressor "driving" the turbocharger), so
#: they are saturated there, like the turbine efficiency saturation (0.2-1) commented in the public
#: Matlab port (vikle012/mpc_thesis, MATLAB_model/turbine.m); the bound on the compressor
#: efficiency is ours. In the problem's default operating region the bound is touched in about 1 %
#: of the samples, for a moment (oplab/problems/engine.py).
ETA_MIN = 0.2
#: the input limits: u_egr 0-100 % and u_vgt 20-100 % (the actuators' ranges; the saturations of
#: the public Matlab port's EGR and turbine models), u_delta 1-250 mg/cycle and n_e 500-2000 rpm
#: (the saturations commented in that port's cylinder model)
LIMITS = {"u_delta": (1.0, 250.0), "u_egr": (0.0, 100.0), "u_vgt": (20.0, 100.0), "n_e": (500.0, 2000.0)}

# The parameter values are those of the published model: Wahlstrom & Eriksson 2011 (tables of the
# tuned parameters) as distributed in the Linkoping University Vehicular Systems package
# "Wahlstrom-Eriksson EGR/VGT diesel engine model" (Matlab/Simulink, parameterData.mat, LGPL;
# the same numbers are read by the public code of the PINN digital-twin paper and of the public
# Matlab port in github.com/vikle012/mpc_thesis, MATLAB_model/). "[LiU]" below marks that source.


@dataclass(frozen=True)
class EngineParams:
    """The model's parameters (SI units unless stated). Every value is from [LiU] (see module),
    i.e. the published, tuned parameter set of Wahlstrom & Eriksson 2011; none is ours."""

    # ambient, gas properties [LiU]
    p_amb: float = 1.0111e5  # Pa, ambient pressure
    T_amb: float = 298.4636  # K, ambient temperature (also the pipe wall temperature T_w)
    R_a: float = 287.0  # J/(kg K), air
    R_e: float = 286.0  # J/(kg K), exhaust gas
    c_pa: float = 1011.0  # J/(kg K)
    c_va: float = 724.0  # J/(kg K)
    c_pe: float = 1332.0  # J/(kg K)
    gamma_a: float = 1.3964
    gamma_e: float = 1.2734
    X_Oc: float = 0.2314  # oxygen mass fraction of air
    AFs: float = 14.57  # stoichiometric air/fuel ratio
    q_HV: float = 4.29e7  # J/kg, heating value of the fuel
    # manifolds [LiU]
    V_im: float = 0.0220  # m^3
    V_em: float = 0.0200  # m^3
    T_im: float = 300.6186  # K, intake manifold temperature (constant in the model)
    # cylinders [LiU]
    V_d: float = 0.0127  # m^3, displaced volume
    n_cyl: float = 6.0
    r_c: float = 17.0  # compression ratio
    c_vol1: float = -2.08166198432250e-4  # Pa^-1/2
    c_vol2: float = -3.44651580527006e-3  # rpm^-1/2
    c_vol3: float = 1.14970210210591
    eta_sc: float = 1.1015  # compensation factor of the seiliger cycle
    x_cv: float = 2.3371e-14  # ratio of fuel burnt at constant volume
    h_tot: float = 96.2755  # W/(m^2 K), heat transfer coefficient of the exhaust pipes
    d_pipe: float = 0.1  # m
    l_pipe: float = 1.0  # m
    n_pipe: float = 2.0
    # EGR valve [LiU]
    A_egrmax: float = 4.0e-4  # m^2, maximum effective area
    Pi_egropt: float = 0.65
    c_egr1: float = -1.11042379923460e-4  # %^-2
    c_egr2: float = 1.77806122860778e-2  # %^-1
    c_egr3: float = 0.0
    tau_degr: float = 0.065  # s, delay
    tau_egr1: float = 0.050  # s
    tau_egr2: float = 0.130  # s
    K_egr: float = 1.8  # overshoot gain
    # turbine and VGT [LiU]
    A_vgtmax: float = 8.4558e-4  # m^2
    K_t: float = 2.8902
    c_f1: float = 1.9480
    c_f2: float = -0.7763
    c_vgt1: float = 126.8719  # %
    c_vgt2: float = 117.1447  # %
    R_t: float = 0.04  # m, turbine blade radius
    BSR_opt: float = 0.9755
    eta_tmmax: float = 0.8180
    c_m1: float = 1.3563
    c_m2: float = 2.7692e3  # rad/s
    c_m3: float = 0.01
    w_tlin: float = 2.7969e3  # rad/s, below it c_m is linear (see signals; [LiU] c_mlin = c_m(w_tlin))
    tau_vgt: float = 0.025  # s
    tau_dvgt: float = 0.040  # s, delay
    J_t: float = 2.0e-4  # kg m^2, turbocharger inertia
    # compressor [LiU]
    R_c: float = 0.04  # m, compressor blade radius
    c_wpsi1: float = 1.0882e-8
    c_wpsi2: float = -1.7320e-4
    c_wpsi3: float = 1.0286
    c_wphi1: float = -1.4298e-8
    c_wphi2: float = -0.0015
    c_wphi3: float = 29.6462
    c_psi2: float = 0.0
    c_phi2: float = 0.0
    eta_cmax: float = 0.7364
    W_copt: float = 0.2753  # kg/s
    pi_copt: float = 1.0455
    c_pi: float = 0.2708
    Q_c11: float = 3.09189776853185
    Q_c12: float = -2.48232013831700
    Q_c22: float = 2.14785596204381

    def with_values(self, **values) -> "EngineParams":
        """A copy with some values replaced (floats, or torch tensors for identification)."""
        unknown = sorted(set(values) - {f.name for f in fields(self)})
        if unknown:
            from ..errors import ParameterError

            raise ParameterError(f"engine: unknown model parameter(s) {unknown}")
        return replace(self, **values)


DEFAULT_PARAMS = EngineParams()


# ------------------------------------------------------------------ array namespaces
class _Scalar:
    """Python floats: the fast path of scipy's integrators (no array overhead)."""

    sqrt = staticmethod(math.sqrt)
    exp = staticmethod(math.exp)

    @staticmethod
    def clip(x, lo=None, hi=None):
        if lo is not None and x < lo:
            x = lo
        if hi is not None and x > hi:
            x = hi
        return x

    @staticmethod
    def where(cond, a, b):
        return a if cond else b


class _Numpy:
    sqrt = staticmethod(np.sqrt)
    exp = staticmethod(np.exp)

    @staticmethod
    def clip(x, lo=None, hi=None):
        return np.clip(x, lo, hi)

    where = staticmethod(np.where)


class _Torch:
    @staticmethod
    def sqrt(x):
        import torch

        return torch.sqrt(x)

    @staticmethod
    def exp(x):
        import torch

        return torch.exp(x)

    @staticmethod
    def clip(x, lo=None, hi=None):
        import torch

        return torch.clamp(x, min=lo, max=hi)

    @staticmethod
    def where(cond, a, b):
        import torch

        return torch.where(cond, a, b)


SCALAR, NUMPY, TORCH = _Scalar(), _Numpy(), _Torch()


# ------------------------------------------------------------------ the model
def f_egr(u, p: EngineParams, xp=NUMPY):
    """Normalised effective EGR area: the parabola up to its maximum, then its maximum."""
    peak = -p.c_egr2 / (2.0 * p.c_egr1)
    top = p.c_egr3 - p.c_egr2**2 / (4.0 * p.c_egr1)
    return xp.where(u <= peak, p.c_egr1 * u * u + p.c_egr2 * u + p.c_egr3, top)


def f_vgt(u, p: EngineParams, xp=NUMPY):
    """Normalised effective VGT area (u = 100 %: open)."""
    arg = xp.clip(1.0 - ((u - p.c_vgt2) / p.c_vgt1) ** 2, 0.0)
    return p.c_f2 + p.c_f1 * xp.sqrt(arg)


def exhaust_temperature(p_im, p_em, W_f, W_ei, p: EngineParams, xp=NUMPY, iterations: int = TE_ITERATIONS):
    """``(T_e, x_r, T_1)`` of the seiliger-cycle model by fixed-point iteration."""
    g = p.gamma_a
    rc = p.r_c ** (g - 1.0)
    Pi_e = p_em / p_im
    x_r = 0.0 * p_im
    T_1 = p.T_im + 0.0 * p_im
    T_e = T_1
    heat = W_f * p.q_HV / (W_f + W_ei)
    for _ in range(iterations):
        q_in = heat * (1.0 - x_r)
        x_p = 1.0 + q_in * p.x_cv / (p.c_va * T_1 * rc)
        x_v = 1.0 + q_in * (1.0 - p.x_cv) / (p.c_pa * (q_in * p.x_cv / p.c_va + T_1 * rc))
        x_r = Pi_e ** (1.0 / g) * x_p ** (-1.0 / g) / (p.r_c * x_v)
        T_e = (p.eta_sc * Pi_e ** (1.0 - 1.0 / g) * p.r_c ** (1.0 - g) * x_p ** (1.0 / g - 1.0)
               * (q_in * ((1.0 - p.x_cv) / p.c_pa + p.x_cv / p.c_va) + T_1 * rc))
        T_1 = x_r * T_e + (1.0 - x_r) * p.T_im
    return T_e, x_r, T_1


def signals(x, u, p: EngineParams = DEFAULT_PARAMS, xp=NUMPY) -> dict:
    """Every flow, temperature and efficiency of the model at state ``x`` (eight entries, floats,
    arrays or tensors) and inputs ``u = (u_delta, u_egr, u_vgt, n_e)`` (the actuator commands enter
    only through the actuator states; the delays are the caller's, see :func:`rhs`)."""
    p_im, p_em, X_Oim, X_Oem, w_t, ut_egr1, ut_egr2, ut_vgt = x
    # floors that keep a solver's trial states inside the functions' domains (never active on a
    # solution: the pressures stay above ambient, omega_t above 1000 rad/s)
    p_im, p_em, w_t = xp.clip(p_im, 1e3), xp.clip(p_em, 1e3), xp.clip(w_t, 1.0)
    u_delta, n_e = u[0], u[3]
    # cylinder
    eta_vol = p.c_vol1 * xp.sqrt(p_im) + p.c_vol2 * xp.sqrt(n_e) + p.c_vol3
    W_ei = eta_vol * p_im * n_e * p.V_d / (120.0 * p.R_a * p.T_im)
    W_f = 1e-6 * u_delta * n_e * p.n_cyl / 120.0
    W_eo = W_f + W_ei
    OF_s = p.AFs * p.X_Oc
    X_Oe = xp.clip((W_ei * X_Oim - W_f * OF_s) / W_eo, 0.0)
    lambda_O = W_ei * X_Oim / (W_f * OF_s)
    T_e, x_r, T_1 = exhaust_temperature(p_im, p_em, W_f, W_ei, p, xp)
    T_em = p.T_amb + (T_e - p.T_amb) * xp.exp(-p.h_tot * math.pi * p.d_pipe * p.l_pipe * p.n_pipe / (W_eo * p.c_pe))
    # EGR valve
    ut_egr = p.K_egr * ut_egr1 - (p.K_egr - 1.0) * ut_egr2
    Pi_egr = xp.clip(p_im / p_em, p.Pi_egropt, 1.0)
    Psi_egr = 1.0 - ((1.0 - Pi_egr) / (1.0 - p.Pi_egropt) - 1.0) ** 2
    A_egr = p.A_egrmax * f_egr(ut_egr, p, xp)
    W_egr = A_egr * p_em * Psi_egr / xp.sqrt(T_em * p.R_e)
    # turbine
    Pi_t = p.p_amb / p_em
    drop = xp.clip(1.0 - Pi_t ** (1.0 - 1.0 / p.gamma_e), 1e-12)  # isentropic temperature drop ratio
    W_t = (p.A_vgtmax * p_em * xp.sqrt(xp.clip(1.0 - Pi_t**p.K_t, 0.0)) * f_vgt(ut_vgt, p, xp)
           / xp.sqrt(T_em * p.R_e))
    BSR = p.R_t * w_t / xp.sqrt(2.0 * p.c_pe * T_em * drop)
    # c_m1 (omega_t - c_m2)^c_m3 with c_m3 = 0.01 has an infinite slope at c_m2; below w_tlin it is
    # linear, down to 0 at c_m2 (the LiU parameter set's w_tlin and c_mlin = 1.4021 = c_m(w_tlin);
    # the linear piece is our reading of them; c_m(w_tlin) is computed, so c_m is continuous)
    c_mlin = p.c_m1 * (p.w_tlin - p.c_m2) ** p.c_m3
    c_m = xp.where(w_t >= p.w_tlin, p.c_m1 * xp.clip(w_t - p.c_m2, 1e-12) ** p.c_m3,
                   c_mlin * xp.clip(w_t - p.c_m2, 0.0) / (p.w_tlin - p.c_m2))
    eta_tm = xp.clip(p.eta_tmmax - c_m * (BSR - p.BSR_opt) ** 2, ETA_MIN)
    P_t = eta_tm * W_t * p.c_pe * T_em * drop  # P_t eta_m
    # compressor
    Pi_c = xp.clip(p_im / p.p_amb, 1.0)
    head = Pi_c ** (1.0 - 1.0 / p.gamma_a) - 1.0
    Psi_c = 2.0 * p.c_pa * p.T_amb * head / (p.R_c**2 * w_t**2)
    c_psi1 = xp.clip(p.c_wpsi1 * w_t**2 + p.c_wpsi2 * w_t + p.c_wpsi3, 0.0)
    c_phi1 = xp.clip(p.c_wphi1 * w_t**2 + p.c_wphi2 * w_t + p.c_wphi3, 0.1)
    Phi_c = xp.sqrt(xp.clip((1.0 - c_psi1 * (Psi_c - p.c_psi2) ** 2) / c_phi1, 0.0)) + p.c_phi2
    W_c = p.p_amb * math.pi * p.R_c**3 * w_t * Phi_c / (p.R_a * p.T_amb)
    chi1 = W_c - p.W_copt
    chi2 = xp.clip(Pi_c - 1.0, 1e-12) ** p.c_pi - p.pi_copt
    eta_c = xp.clip(p.eta_cmax - (p.Q_c11 * chi1 * chi1 + 2.0 * p.Q_c12 * chi1 * chi2 + p.Q_c22 * chi2 * chi2),
                    ETA_MIN)
    P_c = W_c * p.c_pa * p.T_amb * head / eta_c
    return {"W_ei": W_ei, "W_f": W_f, "W_eo": W_eo, "X_Oe": X_Oe, "lambda_O": lambda_O, "eta_vol": eta_vol,
            "T_e": T_e, "x_r": x_r, "T_1": T_1, "T_em": T_em, "ut_egr": ut_egr, "W_egr": W_egr,
            "W_t": W_t, "BSR": BSR, "eta_tm": eta_tm, "P_t_eta_m": P_t, "W_c": W_c, "Pi_c": Pi_c,
            "eta_c": eta_c, "P_c": P_c}


def rhs(x, u, p: EngineParams = DEFAULT_PARAMS, xp=NUMPY):
    """``dx/dt`` (a tuple of eight) at state ``x`` with inputs ``u = (u_delta, u_egr(t - tau_degr),
    u_vgt(t - tau_dvgt), n_e)``: the actuator commands already delayed (:func:`simulate` does it)."""
    s = signals(x, u, p, xp)
    p_im, p_em, X_Oim, X_Oem, w_t, ut_egr1, ut_egr2, ut_vgt = x
    W_c, W_egr, W_ei, W_eo, T_em = s["W_c"], s["W_egr"], s["W_ei"], s["W_eo"], s["T_em"]
    return (
        p.R_a * p.T_im / p.V_im * (W_c + W_egr - W_ei),
        p.R_e * T_em / p.V_em * (W_eo - s["W_t"] - W_egr),
        p.R_a * p.T_im / (p_im * p.V_im) * ((X_Oem - X_Oim) * W_egr + (p.X_Oc - X_Oim) * W_c),
        p.R_e * T_em / (p_em * p.V_em) * (s["X_Oe"] - X_Oem) * W_eo,
        (s["P_t_eta_m"] - s["P_c"]) / (p.J_t * w_t),
        (u[1] - ut_egr1) / p.tau_egr1,
        (u[1] - ut_egr2) / p.tau_egr2,
        (u[2] - ut_vgt) / p.tau_vgt,
    )


# ------------------------------------------------------------------ inputs
class Inputs:
    """The actuator inputs as functions of time: samples ``values [4, m]`` at ``times [m]``,
    piecewise linear in between and constant outside; :meth:`delayed` gives the four inputs the
    right-hand side takes at time ``t`` (the EGR and VGT commands delayed by tau_degr, tau_dvgt)."""

    def __init__(self, times, values, p: EngineParams = DEFAULT_PARAMS):
        self.times = np.asarray(times, dtype=np.float64)
        self.values = np.asarray(values, dtype=np.float64)
        if self.values.shape != (4, self.times.size):
            raise ValueError(f"engine inputs: values of shape {self.values.shape}, expected (4, {self.times.size})")
        self._rows = [np.ascontiguousarray(v) for v in self.values]
        self.tau_egr, self.tau_vgt = float(p.tau_degr), float(p.tau_dvgt)

    def __call__(self, t):
        return np.array([np.interp(t, self.times, v) for v in self._rows])

    def kinks(self) -> np.ndarray:
        """The times where the right-hand side's inputs change slope: the interior samples where
        an input's slope changes, shifted by the delay for the EGR and VGT commands (sorted)."""
        if self.times.size < 3:
            return np.empty(0)
        slope = np.diff(self.values, axis=1) / np.diff(self.times)
        jump = np.abs(np.diff(slope, axis=1)) > 1e-9 * (1.0 + np.abs(slope[:, 1:]))  # [4, m - 2]
        inner = self.times[1:-1]
        out = [inner[jump[0] | jump[3]], inner[jump[1]] + self.tau_egr, inner[jump[2]] + self.tau_vgt]
        return np.unique(np.concatenate(out))

    def delayed(self, t: float) -> tuple:
        tt, (d, e, v, n) = self.times, self._rows
        return (float(np.interp(t, tt, d)), float(np.interp(t - self.tau_egr, tt, e)),
                float(np.interp(t - self.tau_vgt, tt, v)), float(np.interp(t, tt, n)))


def _as_inputs(inputs, times, p) -> Inputs:
    if isinstance(inputs, Inputs):
        return inputs
    if callable(inputs):  # sample the function on a fine grid: piecewise linear in between
        grid = np.linspace(times[0] - max(p.tau_degr, p.tau_dvgt), times[-1], 20 * len(times) + 1)
        return Inputs(grid, np.stack([np.asarray(inputs(t), dtype=np.float64) for t in grid], axis=1), p)
    return Inputs(times, inputs, p)


#: right-hand-side evaluations one integration may take (a 10 s sample takes about 2000); past it
#: the integration is stopped with a RuntimeError instead of crawling on
MAX_EVALUATIONS = 200_000


def make_rhs(inputs: Inputs, p: EngineParams = DEFAULT_PARAMS, limit: int = MAX_EVALUATIONS) -> Callable:
    """``f(t, y)`` for scipy's integrators (Python-float fast path); a RuntimeError after ``limit``
    evaluations."""
    count = [0]

    def f(t, y):
        count[0] += 1
        if count[0] > limit:
            raise RuntimeError(f"engine: the integrator took more than {limit} steps (stuck at t = {t:.6g} s)")
        return list(rhs(tuple(float(v) for v in y), inputs.delayed(t), p, SCALAR))

    return f


# ------------------------------------------------------------------ steady state
def _unscale(z, u):
    """The state of the steady-state unknowns ``z``: log-scaled pressures and turbo speed (so
    that they stay positive), oxygen fractions as they are; actuators at their commands."""
    return (1e5 * math.exp(z[0]), 1e5 * math.exp(z[1]), z[2], z[3], 1e4 * math.exp(z[4]), u[1], u[1], u[2])


def _steady_residual(z, u, p):
    try:
        d = rhs(_unscale(z, u), u, p, SCALAR)
    except (ValueError, OverflowError, ZeroDivisionError):  # outside the model's domain
        return [1e3] * 5
    # scaled to the state magnitudes and to each equation's time scale (about 0.1 s, 2 s for omega_t)
    return [d[0] / 1e6, d[1] / 1e6, d[2] * 10.0, d[3] * 10.0, d[4] / 1e4]


#: further starting points of the steady-state search (p_im, p_em, X_Oim, X_Oem, omega_t): low,
#: high and very high load
_GUESSES = ((1.1e5, 1.2e5, 0.22, 0.15, 4000.0), (2.5e5, 3.0e5, 0.2, 0.1, 11000.0),
            (4.0e5, 5.0e5, 0.18, 0.1, 13000.0))


def steady_state(u_delta: float, u_egr: float, u_vgt: float, n_e: float, p: EngineParams = DEFAULT_PARAMS,
                 x0=None, tol: float = 1e-12) -> np.ndarray:
    """The equilibrium state (eight entries) at constant inputs.

    The actuator states equal their commands (``ut_egr1 = ut_egr2 = u_egr``, ``ut_vgt = u_vgt``);
    the five gas states solve ``f = 0`` by Powell's hybrid method (``scipy.optimize.root``) from
    ``x0`` (default: a generic operating point, then three more), in scaled variables (log
    pressures and speed). If that fails, or lands outside the physical region, the model is
    integrated from ``x0`` for 30 s and the root polished from there. Raises RuntimeError if no
    equilibrium is found.
    """
    from scipy.optimize import root

    u = (float(u_delta), float(u_egr), float(u_vgt), float(n_e))
    if x0 is None:
        x0 = np.array([1.8e5, 2.0e5, 0.2, 0.11, 7000.0, u[1], u[1], u[2]])
    x0 = np.asarray(x0, dtype=np.float64)

    def attempt(start):
        z0 = [math.log(start[0] / 1e5), math.log(start[1] / 1e5), start[2], start[3], math.log(start[4] / 1e4)]
        z = root(_steady_residual, z0, args=(u, p), method="hybr", tol=tol).x
        x = np.array(_unscale(z, u))
        ok = (np.all(np.isfinite(x)) and np.max(np.abs(_steady_residual(z, u, p))) < 1e-8
              and x[0] > 0.5 * p.p_amb and x[1] > 0.5 * p.p_amb and 0 <= x[2] <= p.X_Oc + 1e-9
              and 0 <= x[3] <= p.X_Oc + 1e-9 and x[4] > 0.0)
        return x, ok

    with np.errstate(all="ignore"):
        starts = [x0] + [np.array([a, b, c, d, e, 0, 0, 0]) for a, b, c, d, e in _GUESSES]
        for start in starts:
            x, ok = attempt(start)
            if ok:
                break
        if not ok:  # integrate to (near) equilibrium, then polish
            const = Inputs(np.array([0.0, 1.0]), np.array([u, u]).T, p)
            start = x0.copy()
            start[5:] = [u[1], u[1], u[2]]
            from scipy.integrate import solve_ivp

            run = solve_ivp(make_rhs(const, p), (0.0, 30.0), start, method="LSODA", rtol=1e-8,
                            atol=1e-8 * STATE_SCALE)
            x, ok = attempt(run.y[:, -1])
    if not ok:
        raise RuntimeError(f"engine: no steady state found for inputs {dict(zip(INPUTS, u))}")
    return x


# ------------------------------------------------------------------ simulation
def simulate(inputs, times, p: EngineParams = DEFAULT_PARAMS, x0=None, rtol: float = 1e-6,
             atol: float | np.ndarray | None = None, method: str = "LSODA", max_step: float = np.inf) -> np.ndarray:
    """The states ``[8, len(times)]`` at ``times`` (increasing).

    ``inputs``: samples ``[4, len(times)]`` on ``times`` (piecewise linear between them), an
    :class:`Inputs`, or a function ``t -> [4]``. ``x0``: the initial state (default: the steady
    state of the inputs at ``times[0]``; the delayed commands before ``times[0]`` are its values).
    ``atol`` defaults to ``rtol`` times the state magnitudes :data:`STATE_SCALE`. ``method``: any
    of scipy's ``solve_ivp`` methods (LSODA, BDF, Radau for stiffness; RK45, DOP853).
    """
    from scipy.integrate import solve_ivp

    times = np.asarray(times, dtype=np.float64)
    src = _as_inputs(inputs, times, p)
    if x0 is None:
        x0 = steady_state(*src(times[0]), p=p)
    if atol is None:
        atol = rtol * STATE_SCALE
    f = make_rhs(src, p)
    # integrate from kink to kink of the (piecewise linear, delayed) inputs, so that the integrator
    # never steps across a discontinuity of the right-hand side's slope
    cuts = src.kinks() if not callable(inputs) or isinstance(inputs, Inputs) else np.empty(0)
    cuts = cuts[(cuts > times[0]) & (cuts < times[-1])]
    edges = np.concatenate([[times[0]], cuts, [times[-1]]])
    out = np.empty((len(STATES), times.size))
    out[:, 0] = y = np.asarray(x0, dtype=np.float64)
    done = 1  # records filled
    for a, b in zip(edges[:-1], edges[1:]):
        if b <= a:
            continue
        stop = int(np.searchsorted(times, b, side="right"))
        t_eval = times[done:stop]
        ask = t_eval if t_eval.size and t_eval[-1] == b else np.append(t_eval, b)  # b: the next start
        run = solve_ivp(f, (a, b), y, method=method, t_eval=ask, rtol=rtol, atol=atol, max_step=max_step)
        if not run.success:
            raise RuntimeError(f"engine: the integrator failed at t = {run.t[-1]:.4g} s: {run.message}")
        out[:, done:stop] = run.y[:, : t_eval.size]
        y = run.y[:, -1]
        done = stop
    return out


def simulate_rk4(inputs, times, p: EngineParams = DEFAULT_PARAMS, x0=None, substeps: int = 20) -> np.ndarray:
    """The classical fixed-step fourth-order Runge-Kutta method with ``substeps`` steps per
    interval of ``times`` (for verification): states ``[8, len(times)]``."""
    times = np.asarray(times, dtype=np.float64)
    src = _as_inputs(inputs, times, p)
    if x0 is None:
        x0 = steady_state(*src(times[0]), p=p)
    f = make_rhs(src, p, limit=math.inf)
    y = np.asarray(x0, dtype=np.float64)
    out = [y]
    for a, b in zip(times[:-1], times[1:]):
        h = (b - a) / substeps
        for k in range(substeps):
            t = a + k * h
            k1 = np.asarray(f(t, y))
            k2 = np.asarray(f(t + h / 2, y + h / 2 * k1))
            k3 = np.asarray(f(t + h / 2, y + h / 2 * k2))
            k4 = np.asarray(f(t + h, y + h * k3))
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(y)
    return np.stack(out, axis=1)


__all__ = ["DEFAULT_PARAMS", "EngineParams", "INPUTS", "Inputs", "LIMITS", "NUMPY", "SCALAR", "STATES",
           "STATE_SCALE", "TORCH", "f_egr", "f_vgt", "make_rhs", "rhs", "signals", "simulate", "simulate_rk4",
           "steady_state"]
