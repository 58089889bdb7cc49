"""ε of the DP engine's accountant vs opacus and Google's dp-accounting; calibration and budget errors."""

import pytest

from distill.errors import ConfigError
from distill.privacy.accounting import PrivacyAccountant, calibrate_noise, compute_epsilon, max_steps_within

CASES = [(1.0, 0.01, 1000, 1e-5), (0.8, 0.05, 300, 1e-4), (2.0, 0.004, 5000, 1e-6)]


def _stepped(mechanism, sigma, q, steps, delta):
    acc = PrivacyAccountant(mechanism, delta)
    for _ in range(steps):
        acc.step(sigma, q)
    return acc


def test_rdp_epsilon_of_any_history_is_opacus_bit_for_bit():
    """ε from the kept per-step RDP (distill.privacy.accounting.rdp_per_step) is opacus' RDPAccountant's ε exactly,
    for histories of several stretches (σ or q changed, a stretch repeated), before and after the cache is warm."""
    from opacus.accountants import RDPAccountant

    from distill.privacy.accounting import epsilon_of_history, rdp_per_step

    histories = [[(1.1, 0.01, 1)], [(0.7, 0.02, 300)], [(1.1, 0.01, 120), (2.0, 0.01, 30), (1.1, 0.01, 7)],
                 [(0.55, 0.018, 80), (0.55, 0.05, 3)], [(3.0, 1.0, 10)]]
    rdp_per_step.cache_clear()
    for _ in range(2):
        for history in histories:
            ref = RDPAccountant()
            ref.history = list(history)
            for delta in (1e-5, 1e-3):
                assert epsilon_of_history(history, delta) == float(ref.get_epsilon(delta)), history
    assert rdp_per_step.cache_info().misses == len({(s, q) for h in histories for s, q, _ in h})
    with pytest.raises(ValueError):  # what callers get back cannot be changed under the cache
        rdp_per_step(1.1, 0.01)[0] = 0.0


@pytest.mark.parametrize("sigma,q,steps,delta", CASES)
def test_rdp_epsilon_matches_opacus_and_dp_accounting(sigma, q, steps, delta):
    import dp_accounting
    from opacus.accountants import RDPAccountant

    ours = _stepped("rdp", sigma, q, steps, delta).epsilon()  # step by step, as in training
    ref = RDPAccountant()
    ref.history = [(sigma, q, steps)]
    assert ours == pytest.approx(ref.get_epsilon(delta), rel=1e-9)
    google = dp_accounting.rdp.RdpAccountant(RDPAccountant.DEFAULT_ALPHAS)
    google.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    assert ours == pytest.approx(google.get_epsilon(delta), rel=0.01)


def test_prv_epsilon_matches_dp_accounting_pld():
    """PRV (opacus) vs Google's PLD accountant: both tight numerical accountants (PRV's error bound is 0.01 in ε)."""
    import dp_accounting
    sigma, q, steps, delta = 1.0, 0.01, 1000, 1e-5
    ours = _stepped("prv", sigma, q, steps, delta).epsilon()
    pld = dp_accounting.pld.PLDAccountant()
    pld.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    assert ours == pytest.approx(pld.get_epsilon(delta), rel=0.01)
    assert ours < compute_epsilon(sigma, q, steps, delta, "rdp")  # PRV is tighter than RDP


def test_accountant_state_round_trip(tmp_path):
    acc = _stepped("rdp", 1.1, 0.02, 37, 1e-5)
    acc.save(str(tmp_path))
    other = PrivacyAccountant("rdp", 1e-5)
    other.load_state_dict(PrivacyAccountant.read(str(tmp_path)))
    assert other.steps == 37 and other.epsilon() == acc.epsilon()
    with pytest.raises(ConfigError, match="same dp_accountant"):
        PrivacyAccountant("prv", 1e-5).load_state_dict(PrivacyAccountant.read(str(tmp_path)))


def test_calibrated_noise_meets_target_and_budget_is_exact():
    sigma = calibrate_noise(3.0, 1e-5, 0.02, 400)
    assert compute_epsilon(sigma, 0.02, 400, 1e-5) <= 3.0
    assert compute_epsilon(sigma * 0.97, 0.02, 400, 1e-5) > 3.0 - 0.011  # not wastefully large
    k = max_steps_within(3.0, sigma, 0.02, 1e-5)
    assert k >= 400
    assert compute_epsilon(sigma, 0.02, k, 1e-5) <= 3.0 < compute_epsilon(sigma, 0.02, k + 1, 1e-5)


def test_unreachable_target_is_a_clear_error():
    with pytest.raises(ConfigError, match="cannot be reached"):
        calibrate_noise(1e-6, 1e-5, 1.0, 10_000)
