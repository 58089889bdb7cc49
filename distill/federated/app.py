"""Flower ``ClientApp`` and ``ServerApp`` factories (Flower's Message API).

**ClientApp** (a device):

* ``query``: replies with the device's id and how many training records it holds at the round in the message
  (:class:`~distill.federated.devices.DeviceData` in simulation, or its own ``data-file`` in a deployment).
* ``train``: loads the received global student weights, runs the injected ``local_train`` callable on the
  records it holds (the command layer passes one that runs :class:`~distill.DistillationTrainer` for
  ``local_steps`` steps: KD, CDA + teacher perturbation, optional local DP-SGD) and replies with the student's
  trainable weights and ``num-examples`` (its record count). Training data never leaves the device.

**ServerApp**: runs :class:`~distill.federated.strategy.DeviceSelectionFedAvg` (wrapped in Flower's central DP
wrapper when ``central_dp``) for ``num_rounds`` rounds with a server-side ``evaluate_fn`` (held-out perplexity and
fairness of the global student after every round), then hands the final weights and the per-round history to
``on_finish`` (which saves the student and writes the report).

The device of a SuperNode is its ``partition-id`` node-config value: Flower's simulation engine sets it for
every virtual SuperNode; a deployed SuperNode is started with ``--node-config "partition-id=3 data-file=..."``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import (
    Grid,
    NeighboringRelation,
    PrivacyConfig,
    SamplingMethod,
    ServerApp,
)

from ..errors import DistillError
from .config import FederatedConfig
from .devices import DeviceData, read_device_file
from .storage import held_window
from .strategy import (
    DEVICE_KEY,
    HELD_KEY,
    NUM_EXAMPLES,
    UNIFORM_WEIGHT,
    CentralDP,
    DeviceSelectionFedAvg,
    LivenessGrid,
)

StateDict = dict[str, torch.Tensor]


class LocalTrain(Protocol):
    def __call__(self, state: StateDict, texts: list[str], server_round: int, device: int
                 ) -> tuple[StateDict, dict[str, float]]:
        """Train the student from ``state`` on ``texts``; return its trainable weights and metrics
        (``train_loss``; ``local_epsilon`` under local DP-SGD)."""


class DeviceRecords:
    """What a device holds at a round: a partition of the simulated corpus, or a deployed device's own file."""

    def __init__(self, fl: FederatedConfig, data: DeviceData | None = None):
        self.fl, self.data = fl, data
        self._files: dict[str, list[str]] = {}

    def __call__(self, context: Context, server_round: int) -> tuple[int, list[str]]:
        cfg = context.node_config
        if "partition-id" not in cfg:
            raise DistillError("This SuperNode has no partition-id: start it with --node-config \"partition-id=N\".")
        device = int(cfg["partition-id"])
        if "data-file" in cfg:
            path = str(cfg["data-file"])
            if path not in self._files:
                self._files[path] = read_device_file(path)
            texts = self._files[path]
            start, end = held_window(len(texts), server_round, self.fl.num_rounds, self.fl.setting,
                                     self.fl.storage)
            return device, texts[start:end]
        if self.data is None:
            raise DistillError("This SuperNode has no data-file in its node config and no simulated partition.")
        return device, self.data.records(device, server_round)


def make_client_app(local_train: LocalTrain, records: DeviceRecords) -> ClientApp:
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        server_round = int(msg.content["config"]["server-round"])
        device, texts = records(context, server_round)
        return Message(RecordDict({"metrics": MetricRecord({DEVICE_KEY: device, HELD_KEY: len(texts)})}),
                       reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        server_round = int(msg.content["config"]["server-round"])
        device, texts = records(context, server_round)
        state = msg.content["arrays"].to_torch_state_dict()
        new_state, metrics = local_train(state, texts, server_round, device)
        reply = MetricRecord({NUM_EXAMPLES: len(texts), UNIFORM_WEIGHT: 1, DEVICE_KEY: device,
                              "train-loss": float(metrics.get("train_loss", float("nan"))),
                              "local-epsilon": float(metrics.get("local_epsilon", -1.0))})
        return Message(RecordDict({"arrays": ArrayRecord(new_state), "metrics": reply}), reply_to=msg)

    return app


def make_server_app(fl: FederatedConfig, seed: int, initial_state: StateDict,
                    evaluate: Callable[[StateDict], dict[str, Any]],
                    on_finish: Callable[[StateDict, list[dict]], None],
                    log_round: Callable[[dict], None] | None = None,
                    strategy_options: dict[str, float] | None = None) -> ServerApp:
    """``strategy_options``: ``wait_timeout`` / ``reply_timeout`` / ``query_timeout`` (seconds) of
    :class:`~distill.federated.strategy.DeviceSelectionFedAvg`."""
    app = ServerApp()
    options = dict(strategy_options or {})

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        inner = DeviceSelectionFedAvg(fl, seed, **options)
        strategy, accountant = inner, None
        if fl.central_dp:
            from flwr.serverapp import RdpAccountant

            # no amplification: selection by activity is not uniform sampling, so no subsampling bonus is claimed
            accountant = RdpAccountant(PrivacyConfig(
                target_delta=fl.delta, population_size=fl.num_devices,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=SamplingMethod.NO_AMPLIFICATION))
            strategy = CentralDP(inner, fl.central_dp_noise_multiplier, fl.central_dp_clipping_norm,
                                 fl.devices_per_round, accountant=accountant)
        history: list[dict] = []

        def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            info = dict(inner.rounds.get(server_round, {"round": server_round}))
            started = info.pop("started", None)
            if started is not None:
                info["round_seconds"] = time.time() - started
            entry = {**info, **evaluate(arrays.to_torch_state_dict())}
            if accountant is not None:
                spent = accountant.get_privacy_spent() if accountant.num_releases else None
                entry["central_epsilon"] = spent.epsilon if spent else 0.0
                entry["central_delta"] = fl.delta
            history.append(entry)
            if log_round is not None:
                log_round(entry)
            return MetricRecord({k: float(v) for k, v in entry.items()
                                 if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v})

        live = LivenessGrid(grid)  # a device that leaves mid-round is not waited for until the timeout
        inner.lost_nodes = live.lost
        result = strategy.start(grid=live, initial_arrays=ArrayRecord(initial_state), num_rounds=fl.num_rounds,
                                evaluate_fn=evaluate_fn, timeout=inner.reply_timeout)
        final = result.arrays if result.arrays is not None and len(result.arrays) else ArrayRecord(initial_state)
        on_finish(final.to_torch_state_dict(), history)

    return app
