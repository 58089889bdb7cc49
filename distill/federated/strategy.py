"""`DeviceSelectionFedAvg`: Flower's FedAvg with uniform / activity-based selection of K of N devices.

Each round, :meth:`configure_train`

1. asks every connected device (a Flower ``query`` message carrying the round number) how many training
   records it holds now, n_i (only the count leaves the device; a device that does not answer counts as 0),
2. draws K devices from the server's seeded generator with :func:`~distill.federated.selection.select_devices`
   (``uniform``, or ``activity``: p_i ∝ n_i^γ),
3. sends the global student's weights to the K devices.

Aggregation is Flower's own :meth:`FedAvg.aggregate_train`: the average of the returned weights, each weighted
by its ``num-examples`` (the records the device trained on): w = Σ_k n_k w_k / Σ_k n_k. Under central DP the
weight key is ``uniform-weight`` (1 for every device) because the clipping bound C/K that the noise is
calibrated to holds for the unweighted mean only.

Failures: Flower turns an exception on a device into an error reply, and a device that disconnects sends
nothing (the SuperLink turns it into an error reply once it misses its heartbeats, or ``reply_timeout`` ends
the wait); FedAvg averages the replies that arrived. :meth:`record_replies` keeps, per round, who was selected
with which probability, which nodes (Flower node ids) trained, and who failed and why, for the run report.
Rounds after the first go on with the devices still connected (at least K).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
from flwr.supercore import log

from ..errors import DistillError
from .config import FederatedConfig
from .selection import select_devices

#: Keys of the MetricRecord a device returns.
NUM_EXAMPLES = "num-examples"
UNIFORM_WEIGHT = "uniform-weight"
DEVICE_KEY = "device"
HELD_KEY = "num-records"


class DeviceSelectionFedAvg(FedAvg):
    def __init__(self, fl: FederatedConfig, seed: int, wait_timeout: float = 300.0, reply_timeout: float = 3600.0,
                 query_timeout: float | None = None):
        super().__init__(fraction_train=1.0, min_train_nodes=fl.devices_per_round, min_available_nodes=fl.num_devices,
                         weighted_by_key=UNIFORM_WEIGHT if fl.central_dp else NUM_EXAMPLES)
        # the server evaluates the global student itself (evaluate_fn): no evaluation round on the devices
        self.fraction_evaluate, self.min_evaluate_nodes = 0.0, 0
        self.fl = fl
        self.rng = np.random.default_rng(seed)
        self.wait_timeout, self.reply_timeout = wait_timeout, reply_timeout
        self.query_timeout = reply_timeout if query_timeout is None else query_timeout
        self.rounds: dict[int, dict] = {}
        self._node_device: dict[int, int] = {}
        self._sent_train: dict[int, list[Message]] = {}
        self.current_round = 0

    # ---- which devices exist and what they hold ------------------------------------------------------
    def wait_for_devices(self, grid: Grid) -> list[int]:
        """The connected nodes: all ``num_devices`` before the first round; later rounds go on with at least
        ``devices_per_round`` (a device that disconnected is not waited for)."""
        start = time.monotonic()
        need = self.fl.num_devices if not self._node_device else self.fl.devices_per_round
        while len(nodes := list(grid.get_node_ids())) < need:
            if time.monotonic() - start > self.wait_timeout:
                raise DistillError(f"Only {len(nodes)} of {need} devices connected within "
                                   f"{self.wait_timeout:.0f} s: start more SuperNodes or lower num_devices.")
            time.sleep(0.05)
        return nodes

    def held_records(self, server_round: int, grid: Grid) -> tuple[list[int], list[int | None], list[dict]]:
        """``(counts, node of each device, failures)``: each device's number of records at this round."""
        nodes = self.wait_for_devices(grid)
        content = RecordDict({self.configrecord_key: ConfigRecord({"server-round": server_round})})
        queries = [Message(content=content, message_type=MessageType.QUERY, dst_node_id=n) for n in nodes]
        counts = [0] * self.fl.num_devices
        node_of: list[int | None] = [None] * self.fl.num_devices
        failures = []
        answered = set()
        replies = list(grid.send_and_receive(queries, timeout=self.query_timeout))
        to_node = _recipients(queries)
        for reply in replies:
            node = to_node.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            answered.add(node)
            if reply.has_error():
                failures.append({"device": self._node_device.get(node), "node": node, "stage": "query",
                                 "reason": _reason(reply)})
                continue
            metrics = next(iter(reply.content.metric_records.values()))
            device = int(metrics[DEVICE_KEY])
            if not 0 <= device < self.fl.num_devices:
                raise DistillError(f"Node {node} says it is device {device}, outside 0..{self.fl.num_devices - 1}: "
                                   "check each SuperNode's partition-id.")
            self._node_device[node] = device
            node_of[device] = node
            counts[device] = int(metrics[HELD_KEY])
        for node in set(nodes) - answered:
            lost = node in getattr(self, "lost_nodes", ())
            failures.append({"device": self._node_device.get(node), "node": node, "stage": "query",
                             "reason": "disconnected (left the federation)" if lost else
                             f"no reply within {self.query_timeout:g} s (disconnected?)"})
        return counts, node_of, failures

    # ---- rounds --------------------------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        start = time.time()
        self.current_round = server_round
        counts, node_of, failures = self.held_records(server_round, grid)
        chosen, p = select_devices(counts, self.fl.devices_per_round, self.rng, self.fl.selection,
                                   self.fl.activity_exponent)
        self.rounds[server_round] = {
            "round": server_round, "held_records": counts, "probabilities": [float(x) for x in p],
            "selected": chosen, "selected_records": [counts[d] for d in chosen],
            "selected_node_ids": [node_of[d] for d in chosen], "node_ids": [], "replied": [],
            "failed": failures, "train_loss": None, "started": start,
        }
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        messages = list(self._construct_messages(record, [node_of[d] for d in chosen], MessageType.TRAIN))
        self._sent_train[server_round] = messages  # the grid gives them ids when it sends them
        return messages

    def record_replies(self, server_round: int, replies: list[Message]) -> None:
        """Note who replied (with its loss) and who failed in this round's training replies."""
        info = self.rounds.setdefault(server_round, {"round": server_round, "replied": [], "failed": []})
        info["replied"], info["node_ids"], losses, weights = [], [], [], []
        info["failed"] = [f for f in info.get("failed", []) if f.get("stage") != "train"]
        answered = set()
        to_node = _recipients(self._sent_train.get(server_round, []))
        for reply in replies:
            # an error reply the SuperLink makes for a device (e.g. its upload expired) comes from the SuperLink's
            # node id: the device is the recipient of the message it answers
            node = to_node.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            answered.add(node)
            if reply.has_error():
                info["failed"].append({"device": self._node_device.get(node), "node": node, "stage": "train",
                                       "reason": _reason(reply)})
                continue
            metrics = next(iter(reply.content.metric_records.values()))
            entry = {"device": int(metrics[DEVICE_KEY]), "node_id": int(node),
                     "num_examples": int(metrics[NUM_EXAMPLES]), "train_loss": float(metrics["train-loss"])}
            info["node_ids"].append(int(node))
            if float(metrics.get("local-epsilon", -1.0)) >= 0:
                entry["local_epsilon"] = float(metrics["local-epsilon"])
            info["replied"].append(entry)
            losses.append(entry["train_loss"])
            weights.append(entry["num_examples"])
        for node in info.get("selected_node_ids", []):
            if node is not None and node not in answered:  # e.g. the device disconnected mid-round
                lost = node in getattr(self, "lost_nodes", ())
                info["failed"].append({"device": self._node_device.get(node), "node": node, "stage": "train",
                                       "reason": "disconnected mid-round (left the federation)" if lost else
                                       f"no reply within {self.reply_timeout:g} s (disconnected?)"})
        info["train_loss"] = float(np.average(losses, weights=weights)) if losses else None
        for f in info["failed"]:
            if f["stage"] == "train":
                log(WARNING, "Round %s: device %s failed and was left out of the average: %s", server_round,
                    f["device"], f["reason"])

    def _check_and_log_replies(self, replies: Iterable[Message], is_train: bool,
                               validate: bool = True) -> tuple[list[Message], list[Message]]:
        replies = list(replies)
        if is_train:
            self.record_replies(self.current_round, replies)
        return super()._check_and_log_replies(replies, is_train, validate)


class CentralDP(DifferentialPrivacyServerSideFixedClipping):
    """Flower's central DP wrapper (server-side fixed clipping + Gaussian noise) that also records replies.

    When a selected device fails, Flower's wrapper skips that round's aggregation (the global model stays as it
    was, and no privacy is spent): the report says so.
    """

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        inner: DeviceSelectionFedAvg = self.strategy
        inner.record_replies(server_round, replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:
            inner.rounds[server_round]["aggregation_skipped"] = (
                "central DP aggregates only complete rounds: a selected device failed")
        return arrays, metrics


class LivenessGrid:
    """A Flower grid whose ``send_and_receive`` also stops waiting for a device that left: a message whose
    recipient has not been among the connected nodes for ``grace`` seconds gets no reply, so the round goes on
    without it (instead of waiting the full timeout for a device that was lost mid-training). Everything else
    is the wrapped grid's."""

    def __init__(self, grid: Grid, poll: float = 2.0, grace: float = 5.0):
        self._grid, self.poll, self.grace = grid, poll, grace
        self.lost: set[int] = set()  # nodes given up on

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        grid = self._grid
        if not all(hasattr(grid, a) for a in ("push_messages", "pull_messages", "get_node_ids")):
            return grid.send_and_receive(messages, timeout=timeout)
        messages = list(messages)
        ids = [i for i in grid.push_messages(messages) if i]
        dst = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
        pending = set(ids)
        end = time.monotonic() + (timeout if timeout is not None else 0.0)
        missing_since: dict[int, float] = {}
        replies: list[Message] = []
        while pending and (timeout is None or time.monotonic() < end):
            got = list(grid.pull_messages(pending))
            replies += got
            pending -= {m.metadata.reply_to_message_id for m in got}
            if not pending:
                break
            online, now = set(grid.get_node_ids()), time.monotonic()
            for mid in list(pending):
                node = dst.get(mid)
                if node in online:
                    missing_since.pop(node, None)
                elif now - missing_since.setdefault(node, now) >= self.grace:
                    pending.discard(mid)  # the device left the federation: stop waiting for it
                    self.lost.add(node)
            time.sleep(self.poll)
        return replies


def _recipients(messages: Iterable[Message]) -> dict[str, int]:
    """message id -> the node it was sent to (ids are set once the grid has sent the messages)."""
    out = {}
    for m in messages:
        try:
            if m.metadata.message_id:
                out[m.metadata.message_id] = m.metadata.dst_node_id
        except (AttributeError, ValueError):
            pass
    return out


def _reason(reply: Message) -> str:
    reason = str(getattr(reply.error, "reason", reply.error))
    lines = [ln.strip() for ln in reason.splitlines() if ln.strip()]
    # Flower wraps the device's exception: keep its last line ("Message: ...") rather than Ray's traceback
    tail = next((ln for ln in reversed(lines) if "Message:" in ln or "Error" in ln), lines[-1] if lines else "")
    return tail[:300]
