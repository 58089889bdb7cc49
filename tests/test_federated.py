"""Federated building blocks without Flower's engine: partitions, selection, storage, aggregation, config."""

import numpy as np
import pytest

import flwr  # noqa: F401  (the [fl] extra: the suite needs it, never skipped)

from distill.errors import ConfigError  # noqa: E402
from distill.federated.config import FederatedConfig  # noqa: E402
from distill.federated.partition import (  # noqa: E402
    attribute_partition,
    attribute_skew,
    iid_partition,
    partition,
    quantity_partition,
    text_attributes,
)
from distill.federated.selection import (  # noqa: E402
    inclusion_probabilities,
    select_devices,
    selection_probabilities,
)
from distill.federated.storage import held_count, held_window  # noqa: E402


def _is_partition(parts, n):
    allidx = np.concatenate(parts)
    return len(allidx) == n and len(np.unique(allidx)) == n


# ---- partitions ------------------------------------------------------------------------------------
def test_iid_partition_sizes_and_reproducible():
    parts = iid_partition(103, 10, seed=3)
    assert _is_partition(parts, 103)
    assert sorted(len(p) for p in parts) == [10] * 7 + [11] * 3
    assert all((a == b).all() for a, b in zip(parts, iid_partition(103, 10, seed=3)))
    assert any((a != b).any() for a, b in zip(parts, iid_partition(103, 10, seed=4)))


def test_quantity_skew_grows_as_alpha_shrinks():
    def cv(alpha, seed):
        sizes = np.array([len(p) for p in quantity_partition(2000, 20, alpha, seed=seed, min_size=2)])
        return sizes.std() / sizes.mean()

    for seed in range(3):
        parts = quantity_partition(2000, 20, 0.3, seed=seed, min_size=2)
        assert _is_partition(parts, 2000) and min(len(p) for p in parts) >= 2
        assert cv(0.3, seed) > 2 * cv(100.0, seed)
    assert cv(100.0, 0) < 0.3


def test_power_law_sizes_follow_ranks():
    parts = quantity_partition(1000, 5, 1.0, seed=0, power_law=True)
    sizes = sorted((len(p) for p in parts), reverse=True)
    # shares 1, 1/2, 1/3, 1/4, 1/5 of 1000 / H_5 (minimum 1 each)
    expected = [1000 / sum(1 / r for r in range(1, 6)) / r for r in range(1, 6)]
    assert np.allclose(sizes, expected, atol=2)


def test_attribute_skew_from_the_definition():
    rng = np.random.default_rng(0)
    attrs = rng.choice(["male", "female", "neutral"], size=3000).tolist()
    skewed = attribute_partition(attrs, 10, alpha=0.1, seed=1, min_size=5)
    mild = attribute_partition(attrs, 10, alpha=1000.0, seed=1, min_size=5)
    assert _is_partition(skewed, 3000) and _is_partition(mild, 3000)
    assert min(len(p) for p in skewed) >= 5
    # reference TV distance, written from the definition for one device
    values = np.asarray(attrs)
    p0 = skewed[0]
    cats = ["female", "male", "neutral"]
    tv0 = 0.5 * sum(abs((values[p0] == c).mean() - (values == c).mean()) for c in cats)
    assert attribute_skew([p0], attrs) == pytest.approx(tv0)
    assert attribute_skew(skewed, attrs) > 0.3 > 0.05 > attribute_skew(mild, attrs)


def test_text_attributes_and_dispatch():
    texts = ["The nurse said that she would be late.", "He fixed the car.", "The river flooded.",
             "The truck driver lost his keys."]
    assert text_attributes(texts, "gender") == ["female", "male", "neutral", "male"]
    assert text_attributes(texts, "occupation")[0] == "nurse"
    assert text_attributes(texts, "occupation")[3] == "truck driver"
    assert _is_partition(partition(texts * 10, 4, "attribute", alpha=0.5, seed=0), 40)
    with pytest.raises(ConfigError, match="partition must be one of"):
        partition(texts, 2, "bogus")
    with pytest.raises(ConfigError, match="cannot give 5 devices"):
        iid_partition(4, 5)


# ---- selection -------------------------------------------------------------------------------------
def test_selection_probabilities():
    counts = [10, 0, 30, 60]
    assert selection_probabilities(counts, "uniform").tolist() == pytest.approx([1 / 3, 0, 1 / 3, 1 / 3])
    assert selection_probabilities(counts, "activity").tolist() == pytest.approx([0.1, 0, 0.3, 0.6])
    sq = np.array([100, 0, 900, 3600]) / 4600
    assert selection_probabilities(counts, "activity", 2.0) == pytest.approx(sq)
    assert selection_probabilities(counts, "activity", 0.0) == pytest.approx(selection_probabilities(counts))
    with pytest.raises(ConfigError, match="No device"):
        selection_probabilities([0, 0], "activity")


def test_single_selection_frequencies_match_probabilities_chi_square():
    from scipy.stats import chisquare

    counts = [5, 10, 20, 40, 80, 5]
    rng = np.random.default_rng(1234)
    draws = 6000
    freq = np.zeros(len(counts))
    for _ in range(draws):
        chosen, p = select_devices(counts, 1, rng, "activity")
        freq[chosen[0]] += 1
    assert chisquare(freq, p * draws).pvalue > 0.01
    # the same test rejects uniform selection's frequencies: it has power here
    assert chisquare(freq, np.full(len(counts), draws / len(counts))).pvalue < 1e-6


def test_k_of_n_inclusion_frequencies_match_exact_probabilities():
    from scipy.stats import binomtest

    counts = [3, 6, 12, 24, 48, 1]
    k, rounds = 3, 4000
    rng = np.random.default_rng(7)
    hits = np.zeros(len(counts))
    for _ in range(rounds):
        chosen, p = select_devices(counts, k, rng, "activity")
        assert len(set(chosen)) == k
        hits[chosen] += 1
    pi = inclusion_probabilities(p, k)
    assert pi.sum() == pytest.approx(k)
    for i in range(len(counts)):  # each device's count is Binomial(rounds, pi_i); Bonferroni over 6 devices
        assert binomtest(int(hits[i]), rounds, pi[i]).pvalue > 0.01 / len(counts), (i, hits[i] / rounds, pi[i])
    # uniform selection: every device k/N
    assert inclusion_probabilities(selection_probabilities(counts), k) == pytest.approx([0.5] * 6)


def test_selection_skips_empty_devices_and_is_seeded():
    a, _ = select_devices([0, 5, 0, 5], 3, np.random.default_rng(0), "activity")
    assert sorted(a) == [1, 3]
    seq = [select_devices([1, 2, 3, 4], 2, np.random.default_rng(9))[0] for _ in range(2)]
    assert seq[0] == seq[1]


# ---- storage ---------------------------------------------------------------------------------------
def test_static_holds_everything():
    assert held_window(40, 3, 10, "static") == (0, 40)


def test_continual_storage_cap_deletes_oldest():
    stream, rounds, cap = 50, 10, 12
    prev_end = 0
    for r in range(1, rounds + 1):
        start, end = held_window(stream, r, rounds, "continual", cap)
        assert end == -(-stream * r // rounds)  # ceil: new records arrive every round
        assert end > prev_end
        assert end - start == min(cap, end) <= cap  # never more than the cap ...
        assert start == max(0, end - cap)  # ... and the oldest go first
        prev_end = end
    assert held_window(stream, rounds, rounds, "continual", cap) == (38, 50)
    assert held_count(stream, rounds, rounds, "continual", None) == 50
    with pytest.raises(ConfigError, match="storage"):
        held_window(5, 1, 2, "continual", 0)


def test_device_data_counts_follow_setting():
    from distill.federated.devices import DeviceData

    texts = [f"record {i}" for i in range(60)]
    fl = FederatedConfig(num_devices=3, devices_per_round=2, num_rounds=4, setting="continual", storage=8)
    data = DeviceData(texts, fl, seed=0)
    for r in range(1, 5):
        counts = data.counts(r)
        assert counts == [len(data.records(d, r)) for d in range(3)]
        assert max(counts) <= 8
    # round 1 holds the first records of the stream; the last round the newest ones
    assert data.records(0, 1) == [texts[i] for i in data.streams[0][:5]]
    assert data.records(0, 4) == [texts[i] for i in data.streams[0][12:20]]


# ---- aggregation -----------------------------------------------------------------------------------
def test_fedavg_equals_sample_weighted_mean():
    from flwr.app import ArrayRecord, Message, Metadata, MetricRecord, RecordDict

    from distill.federated.strategy import DeviceSelectionFedAvg

    rng = np.random.default_rng(0)
    import torch

    states = [{"w": torch.tensor(rng.normal(size=(3, 2))), "b": torch.tensor(rng.normal(size=4))} for _ in range(3)]
    n = [5, 20, 75]
    fl = FederatedConfig(num_devices=3, devices_per_round=3)
    strategy = DeviceSelectionFedAvg(fl, seed=0)
    replies = []
    for i, (s, ni) in enumerate(zip(states, n)):
        content = RecordDict({"arrays": ArrayRecord(s), "metrics": MetricRecord(
            {"num-examples": ni, "uniform-weight": 1, "device": i, "train-loss": float(i), "local-epsilon": -1.0})})
        meta = Metadata(run_id=1, message_id=str(i), src_node_id=100 + i, dst_node_id=0, reply_to_message_id="0",
                        group_id="", created_at=0.0, ttl=60.0, message_type="train")
        replies.append(Message(content=content, metadata=meta))
    strategy.current_round = 1  # configure_train of round 1 ran
    arrays, metrics = strategy.aggregate_train(1, replies)
    got = arrays.to_torch_state_dict()
    for key in ("w", "b"):
        want = sum(ni * s[key] for s, ni in zip(states, n)) / sum(n)
        assert torch.allclose(got[key], want, atol=1e-12)
    assert strategy.rounds[1]["train_loss"] == pytest.approx((0 * 5 + 1 * 20 + 2 * 75) / 100)
    # under central DP every device weighs the same (the noise is calibrated to the unweighted mean)
    dp = DeviceSelectionFedAvg(FederatedConfig(num_devices=3, devices_per_round=3, central_dp=True), seed=0)
    arrays, _ = dp.aggregate_train(1, replies)
    assert torch.allclose(arrays.to_torch_state_dict()["b"], sum(s["b"] for s in states) / 3, atol=1e-12)


# ---- config ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    (dict(devices_per_round=5, num_devices=3), "cannot exceed"),
    (dict(selection="random"), "selection must be one of"),
    (dict(storage=10), "only applies to setting: continual"),
    (dict(num_rounds=0), "num_rounds must be an integer"),
])
def test_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        FederatedConfig(**kw)


def test_unknown_federated_key_suggests():
    with pytest.raises(ConfigError, match="did you mean num_rounds"):
        FederatedConfig.from_dict({"num_round": 3})


# ---- the server app end to end, in-process (a stand-in Grid instead of Flower's engine) -----------------
class _InProcessGrid:
    """Delivers each message to the ClientApp of its node in this process; an exception becomes an error reply,
    as Flower's runtime does."""

    def __init__(self, client_app, num_devices):
        from flwr.app import Context, RecordDict

        self.app = client_app
        self.contexts = {100 + i: Context(run_id=1, node_id=100 + i, node_config={"partition-id": i},
                                          state=RecordDict(), run_config={}) for i in range(num_devices)}

    def get_node_ids(self):
        return list(self.contexts)

    def send_and_receive(self, messages, *, timeout=None):
        from flwr.app import Error, Message

        out = []
        for m in messages:
            try:
                out.append(self.app(m, self.contexts[m.metadata.dst_node_id]))
            except Exception as exc:  # noqa: BLE001
                out.append(Message(Error(code=0, reason=f"Message: {exc}"), reply_to=m))
        return out


def _run_server_in_process(monkeypatch, fl, local_train, texts):
    import torch
    from flwr.supercore.task_identity import TaskIdentity

    from distill.federated.app import DeviceRecords, make_client_app, make_server_app
    from distill.federated.devices import DeviceData

    for attr, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 0)):
        monkeypatch.setattr(TaskIdentity, attr, value, raising=False)
    data = DeviceData(texts, fl, seed=0)
    done = {}
    initial = {"w": torch.zeros(4, dtype=torch.float64)}
    server = make_server_app(fl, 0, initial, lambda state: {"norm": float(state["w"].norm())},
                             lambda state, history: done.update(state=state, history=history))
    grid = _InProcessGrid(make_client_app(local_train, DeviceRecords(fl, data)), fl.num_devices)
    server(grid, None)
    return data, done


def test_server_app_rounds_selection_and_failure_in_process(monkeypatch):
    import torch

    def local(state, texts, server_round, device):
        if (device, server_round) == (1, 2):
            raise RuntimeError("disk full")
        return {"w": state["w"] + device + 1}, {"train_loss": float(len(texts))}

    texts = [f"t{i}" for i in range(40)]
    fl = FederatedConfig(num_devices=4, devices_per_round=4, num_rounds=2, partition="quantity", partition_alpha=1.0)
    data, done = _run_server_in_process(monkeypatch, fl, local, texts)
    history = done["history"]
    assert [e["round"] for e in history] == [0, 1, 2]
    n = np.array(data.counts(1), dtype=float)
    r1 = float(np.dot(n, np.arange(1, 5)) / n.sum())  # sample-weighted mean of the updates 1..4
    keep = [0, 2, 3]
    r2 = r1 + float(np.dot(n[keep], np.array([1, 3, 4])) / n[keep].sum())  # device 1 failed: the others' mean
    assert torch.allclose(done["state"]["w"], torch.full((4,), r2, dtype=torch.float64))
    assert [(f["device"], f["stage"]) for f in history[2]["failed"]] == [(1, "train")]
    assert "disk full" in history[2]["failed"][0]["reason"]


def test_central_dp_clips_averages_unweighted_and_accounts(monkeypatch):
    import torch
    from opacus.accountants import RDPAccountant

    sigma, clip = 0.8, 1.0

    def local(state, texts, server_round, device):  # updates of norm 2 (clipped to 1) and 0.5 (kept)
        step = torch.tensor([2.0, 0, 0, 0], dtype=torch.float64) if device == 0 else \
            torch.tensor([0, 0.5, 0, 0], dtype=torch.float64)
        return {"w": state["w"] + step}, {"train_loss": 0.0}

    fl = FederatedConfig(num_devices=2, devices_per_round=2, num_rounds=3, central_dp=True,
                         central_dp_noise_multiplier=sigma, central_dp_clipping_norm=clip, central_dp_delta=1e-3)
    torch.manual_seed(0)
    _, done = _run_server_in_process(monkeypatch, fl, local, [f"t{i}" for i in range(10)])
    history = done["history"]
    # reference accountant: opacus' RDP for a Gaussian mechanism without subsampling (q = 1), one step a round
    ref = RDPAccountant()
    for r in range(1, 4):
        ref.step(noise_multiplier=sigma, sample_rate=1.0)
        assert history[r]["central_epsilon"] == pytest.approx(ref.get_epsilon(delta=1e-3), rel=0.02)
    assert history[1]["central_epsilon"] < history[2]["central_epsilon"] < history[3]["central_epsilon"]
    # the noiseless part of each round is the unweighted mean of the clipped updates, (1, 0.5)/2 = (0.5, 0.25);
    # the noise has std sigma*C/K = 0.4 per coordinate: over 3 rounds the error is N(0, 3 * 0.16)
    w = done["state"]["w"].numpy()
    assert np.all(np.abs(w - np.array([1.5, 0.75, 0, 0])) < 5 * np.sqrt(3 * 0.16))


def test_central_dp_aggregate_is_the_unweighted_mean_of_clipped_updates(monkeypatch):
    import torch

    def local(state, texts, server_round, device):  # an update of norm 2 (clipped to 1) and one of 0.5 (kept)
        step = torch.tensor([2.0, 0, 0, 0]) if device == 0 else torch.tensor([0, 0.5, 0, 0])
        return {"w": state["w"] + step.double()}, {"train_loss": 0.0}

    fl = FederatedConfig(num_devices=2, devices_per_round=2, num_rounds=2, central_dp=True,
                         central_dp_noise_multiplier=1e-6, central_dp_clipping_norm=1.0, partition="quantity",
                         partition_alpha=0.2)  # unequal record counts: the weights must not matter
    _, done = _run_server_in_process(monkeypatch, fl, local, [f"t{i}" for i in range(30)])
    assert np.allclose(done["state"]["w"].numpy(), [1.0, 0.5, 0, 0], atol=1e-4)  # 2 rounds x (0.5, 0.25)


def _fl_report(biases_by_round, by_profession):
    rounds = [{"round": r, "cooccurrence_bias_mean_abs": b, "perplexity": 3.0 - r / 10} for r, b in
              enumerate(biases_by_round)]
    final = rounds[-1]
    final["cooccurrence_bias_by_profession"] = by_profession
    final["cooccurrence_bias_ci95"] = [final["cooccurrence_bias_mean_abs"] - 0.01,
                                       final["cooccurrence_bias_mean_abs"] + 0.01]
    final["num_bias_prompts"] = 6 * len(by_profession)
    return {"rounds": rounds, "runtime_seconds": 1.0}


def test_compare_reports_intervals_paired_differences_and_round_swing():
    from distill.federated.report import bias_swing, compare_bias, comparison_rows, format_table

    base = _fl_report([0.30, 0.20, 0.26, 0.22], {"nurse": 0.4, "pilot": -0.3, "chef": 0.2, "judge": -0.1})
    lower = _fl_report([0.30, 0.10, 0.11, 0.10], {"nurse": 0.2, "pilot": -0.1, "chef": 0.05, "judge": 0.0})
    # swing: mean |change| over rounds after the first: |0.26-0.20|, |0.22-0.26|
    assert bias_swing(base["rounds"]) == pytest.approx((0.06 + 0.04) / 2)
    assert bias_swing(base["rounds"][:2]) is None
    c = compare_bias(lower, base)
    d = [0.2 - 0.4, 0.1 - 0.3, 0.05 - 0.2, 0.0 - 0.1]  # |b| differences, profession by profession
    assert c["n"] == 4 and c["mean_difference"] == pytest.approx(sum(d) / 4)
    assert c["verdict"] == "lower" and c["ci95"][1] < 0
    assert c["swing"] == pytest.approx(0.05) and c["within_swing"] is False  # |-0.1625| > 0.05
    # a difference within the swing is flagged even when the professions separate it
    close = _fl_report([0.3, 0.2, 0.24, 0.22], {"nurse": 0.39, "pilot": -0.29, "chef": 0.19, "judge": -0.09})
    assert compare_bias(close, base)["within_swing"] is True
    rows = comparison_rows({"uniform-static": base, "activity-static": lower})
    assert rows[0]["bias_vs_first"] is None and rows[1]["bias_vs_first"]["verdict"] == "lower"
    assert rows[1]["final_bias_ci95"] == pytest.approx([0.09, 0.11]) and rows[1]["num_bias_prompts"] == 24
    table = format_table(rows)
    assert "0.100 [0.090, 0.110]" in table and "lower" in table and "over 24 profession prompts" in table
    # a report without per-profession values (older fl_report.json) compares as "-"
    old = {"rounds": [{"round": 0, "cooccurrence_bias_mean_abs": 0.2}], "runtime_seconds": 1.0}
    assert compare_bias(old, base) is None
