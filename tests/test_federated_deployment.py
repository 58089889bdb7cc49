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
    flags = deployment.run_config_flags({"config": "c.yaml", "num-rounds": 3, "central-dp": True,
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
    """3 SuperNodes x 2 rounds, all 3 devices selected a round; device 2 is killed while round 2 trains; a
    SuperNode with an unregistered key is refused; every started process is gone afterwards."""
    out = tmp_path / "fl"
    env = {**os.environ, "PYTHONPATH": REPO, "FL_DISCONNECT_NODE": "2", "FL_DISCONNECT_ROUND": "2",
           "FL_NUM_ROUNDS": "2", "FL_LOCAL_STEPS": "1"}
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
    r1, r2 = report["rounds"][1], report["rounds"][2]
    assert len(r1["node_ids"]) == 3 and len(set(r1["node_ids"])) == 3  # every device trained in round 1
    assert set(report["node_ids"]) == set(r1["node_ids"])
    # device 2 disconnected mid-round 2: the round went on with the other two, the report says so
    assert (logs / "disconnect.log").exists()
    assert len(r2["node_ids"]) == 2 and set(r2["node_ids"]) < set(r1["node_ids"])
    assert [f["device"] for f in r2["failed"] if f["stage"] == "train"] == [2]
    assert any(f["round"] == 2 and f["device"] == 2 for f in report["failures"])
    assert r2["perplexity"] is not None
    # the final student and its card
    assert (out / "model.safetensors").exists()
    assert "## Federated training" in (out / "README.md").read_text()

    # clean-up: nothing the script started still runs
    pids = [int(p) for p in (out / "deployment" / "pids").read_text().split()]
    assert len(pids) >= 5  # SuperLink + 3 SuperNodes + flwr run, and their children
    assert [p for p in pids if _running(p)] == []
