"""Flower's deployment engine: a SuperLink and 3 SuperNodes on 127.0.0.1 with TLS and SuperNode authentication
(scripts/fl_local_deployment.sh), plus the pieces it is made of."""

import json
import os
import shutil
import subprocess
import time

import pytest

flwr = pytest.importorskip("flwr")

from distill.federated import deployment  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "fl_local_deployment.sh")


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_run_config_becomes_yaml_flags():
    flags = deployment.run_config_flags({"config": "c.yaml", "num-rounds": 3, "central-dp": True, "local-steps": 0,
                                         "output-dir": "/o", "reply-timeout": 5.0,
                                         "overrides": "--learning_rate 1e-3 --num_rounds 4"})
    assert flags == ["--num_rounds", "3", "--central_dp", "true", "--output_dir", "/o",
                     "--overwrite_output_dir", "true", "--learning_rate", "1e-3", "--num_rounds", "4"]


def test_tls_files_and_node_keys_are_what_flower_loads(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

    tls = deployment.make_tls(str(tmp_path))
    ca = x509.load_pem_x509_certificate(open(tls["ca"], "rb").read())
    cert = x509.load_pem_x509_certificate(open(tls["cert"], "rb").read())
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    key = deployment.make_node_key(str(tmp_path / "node.key"))
    assert load_ssh_private_key(open(key, "rb").read(), None).curve.name == "secp384r1"
    assert load_ssh_public_key(open(key + ".pub", "rb").read()).curve.name == "secp384r1"
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"


def test_deployment_module_names_the_apps_for_flower():
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.supercore.object_ref import validate

    import distill.commands.federated as cmd

    assert validate("distill.federated.deployment:server_app", project_dir=REPO)[0]  # `flwr run`'s static check
    assert isinstance(deployment.server_app, ServerApp) and isinstance(deployment.client_app, ClientApp)
    assert cmd.server_app is deployment.server_app and cmd.client_app is deployment.client_app  # the alias


def test_superlink_option_builds_flwr_run(tmp_path):
    cmd = deployment.flwr_run_command("127.0.0.1:9", os.path.join(REPO, "configs/tiny-fl.yaml"),
                                      ["--num_rounds", "3"], REPO)
    assert cmd[:4] == ["flwr", "run", REPO, "distill"] and "--stream" in cmd
    assert 'config="configs/tiny-fl.yaml"' in cmd[5]  # in the app bundle: relative
    assert f'config="{tmp_path}/x.yaml"' in deployment.flwr_run_command("h:1", str(tmp_path / "x.yaml"), [], REPO)[5]
    assert "overrides=\"--num_rounds 3\"" in cmd[5]
    toml = open(deployment.write_flower_connection(str(tmp_path), "127.0.0.1:9", "ca.crt")).read()
    assert 'address = "127.0.0.1:9"' in toml and "root-certificates" in toml


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("flower-superlink") is None, reason="Flower's deployment CLI is not installed")
def test_local_deployment_tls_auth_disconnect_and_cleanup(tmp_path, tiny_teacher_dir):
    """3 SuperNodes, all 3 devices selected; device 2 is killed while the round trains and the round is averaged
    over the other two; a SuperNode with an unregistered key is refused; every started process is gone afterwards.
    One round: a second would only repeat the first (Flower starts a process per message), at ~40 s a round."""
    out = tmp_path / "fl"
    env = {**os.environ, "PYTHONPATH": REPO, "FL_DISCONNECT_NODE": "2", "FL_DISCONNECT_ROUND": "1",
           "FL_NUM_ROUNDS": "1", "FL_LOCAL_STEPS": "1"}
    flags = ["--teacher_model_name_or_path", tiny_teacher_dir, "--student_num_layers", "1", "--max_train_samples",
             "48", "--block_size", "32", "--per_device_train_batch_size", "4", "--eval_max_records", "8",
             "--devices_per_round", "3"]
    start = time.time()
    proc = subprocess.run(["bash", SCRIPT, str(out), *flags], env=env, capture_output=True, text=True,
                          timeout=900)
    logs = out / "deployment" / "logs"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + (
        (logs / "run.log").read_text()[-4000:] if (logs / "run.log").exists() else "")
    print(f"deployment run: {time.time() - start:.0f} s")

    # the unregistered key was refused, and never became a node
    assert "unregistered SuperNode refused" in proc.stdout
    assert "Failed to activate SuperNode" in (logs / "unregistered.log").read_text()

    report = json.loads((out / "fl_report.json").read_text())
    assert report["engine"] == "deployment"
    r1 = report["rounds"][1]
    assert sorted(r1["selected"]) == [0, 1, 2] and len(set(r1["selected_node_ids"])) == 3  # K = N: every device
    assert [e["node_id"] for e in r1["replied"]] == r1["node_ids"] and set(report["node_ids"]) == set(r1["node_ids"])
    # device 2 disconnected while training: the round went on with the other two, the report says so
    assert (logs / "disconnect.log").exists()
    node2 = r1["selected_node_ids"][r1["selected"].index(2)]
    assert [(f["device"], f["node"]) for f in r1["failed"] if f["stage"] == "train"] == [(2, node2)]
    assert node2 not in r1["node_ids"] and len(r1["node_ids"]) == 2
    assert any(f["round"] == 1 and f["device"] == 2 for f in report["failures"])
    assert r1["perplexity"] is not None and r1["perplexity"] != report["rounds"][0]["perplexity"]  # it averaged
    # the final student and its card
    assert (out / "model.safetensors").exists()
    assert "## Federated training" in (out / "README.md").read_text()

    # clean-up: nothing the script started still runs
    pids = [int(p) for p in (out / "deployment" / "pids").read_text().split()]
    assert len(pids) >= 5  # SuperLink + 3 SuperNodes + flwr run, and their children
    assert [p for p in pids if _running(p)] == []


class _Meta:
    def __init__(self, message_id, dst_node_id=None, reply_to_message_id=None):
        self.message_id, self.dst_node_id, self.reply_to_message_id = message_id, dst_node_id, reply_to_message_id


class _Msg:
    def __init__(self, **kw):
        self.metadata = _Meta(**kw)


class _LeavingGrid:
    """Node 11 replies at once; node 12 never replies and leaves the federation after the first poll."""

    def __init__(self):
        self.polls = 0

    def push_messages(self, messages):
        for i, m in enumerate(messages):
            m.metadata.message_id = f"m{i}"
        return [m.metadata.message_id for m in messages]

    def pull_messages(self, ids):
        self.polls += 1
        return [_Msg(message_id="r0", reply_to_message_id="m0")] if "m0" in ids else []

    def get_node_ids(self):
        return [11, 12] if self.polls < 2 else [11]


def test_a_device_that_leaves_mid_round_is_not_waited_for():
    from distill.federated.strategy import LivenessGrid

    grid = LivenessGrid(_LeavingGrid(), poll=0.01, grace=0.05)
    start = time.monotonic()
    replies = grid.send_and_receive([_Msg(message_id=None, dst_node_id=11), _Msg(message_id=None, dst_node_id=12)],
                                    timeout=30)
    assert time.monotonic() - start < 5  # not the 30 s timeout
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"] and grid.lost == {12}
