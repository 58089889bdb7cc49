"""A real deployment: the Flower ServerApp and ClientApp that ``flwr run`` starts on a SuperLink and SuperNodes.

The project's ``pyproject.toml`` names them (Flower imports ``server_app`` / ``client_app`` from this module;
they are built on first access, so ``distill --help`` never imports flwr)::

    [tool.flwr.app.components]
    serverapp = "distill.federated.deployment:server_app"
    clientapp = "distill.federated.deployment:client_app"

    [tool.flwr.app.config]              # the run config (override with flwr run -c "key=value")
    config = "configs/tiny-fl.yaml"     # the `distill federated` YAML
    num-rounds = 0                      # any other key: a flag of that YAML (num-rounds -> --num_rounds);
                                        # 0 or "": the YAML's value
    output-dir = "runs/fl-deployment"   # where the ServerApp writes the student and fl_report.json
    overrides = ""                      # more flags, "--learning_rate 1e-3 --seed 1"
    reply-timeout = 600.0               # seconds the server waits for a round's training replies
    query-timeout = 60.0                # seconds it waits for the devices' record counts

Run-config keys that are not flags: ``config``, ``output-dir``, ``overrides``, ``reply-timeout``,
``query-timeout``, ``wait-timeout`` (seconds to wait for all ``num_devices`` devices before round 1). A relative
``config`` path is read from the process's working directory, else from the installed app's directory.

SuperNodes are started with ``--node-config "partition-id=N data-file=PATH"``: a SuperNode's ClientApp answers
the server's ``query`` from its ``data-file`` alone (no model is built) and runs
:class:`~distill.federated.local_training.LocalDistillation` on a ``train`` message; the ServerApp runs the
:class:`~distill.federated.simulation.FederatedRun` server (``engine: deployment`` in the report) and writes its
outputs. :func:`prepare_local_deployment` (``python -m distill.federated.deployment prepare``) makes what
``scripts/fl_local_deployment.sh`` needs: a throw-away CA, the SuperLink's TLS certificate, one SSH EC key pair
per device and each device's data file.
"""

from __future__ import annotations

import os
import shlex
import sys

# Flower checks the component names statically: they are listed here and built by __getattr__ below.
__all__ = ["server_app", "client_app", "make_deployment_apps", "deployed_configs",  # noqa: F822
           "prepare_local_deployment"]

#: Run-config keys that are not flags of the YAML.
RUN_KEYS = ("config", "output-dir", "overrides", "reply-timeout", "query-timeout", "wait-timeout")

#: The apps of this process, built on first use (one ClientApp process handles one message).
_DEPLOYED: dict[str, object] = {}


def _resolve_config_path(path: str) -> str:
    if os.path.isabs(path) or os.path.exists(path):
        return path
    for root in sys.path:  # Flower puts the installed app's directory on sys.path
        candidate = os.path.join(root, path)
        if root and os.path.exists(candidate):
            return candidate
    return path


def run_config_flags(run_config) -> list[str]:
    """The YAML flags of a Flower run config: ``num-rounds = 2`` -> ``--num_rounds 2`` (0 or "": the YAML's
    value), then ``output-dir``, then ``overrides`` (last, so they win)."""
    flags: list[str] = []
    for key, value in run_config.items():
        if key in RUN_KEYS or (value == "" or (value == 0 and not isinstance(value, bool))):
            continue  # 0 / "": the YAML's value
        flags += ["--" + key.replace("-", "_"), str(value).lower() if isinstance(value, bool) else str(value)]
    if run_config.get("output-dir"):
        flags += ["--output_dir", str(run_config["output-dir"]), "--overwrite_output_dir", "true"]
    return flags + shlex.split(str(run_config.get("overrides", "") or ""))  # last: they win


def deployed_configs(context):
    """``(DistillationConfig, FederatedConfig)`` of the run, from the Flower run config."""
    from ..errors import ConfigError
    from .config import load_federated_config

    config = context.run_config.get("config")
    if not config:
        raise ConfigError("The Flower run config has no 'config' key: set config = \"path/to/config.yaml\" under "
                          "[tool.flwr.app.config].")
    return load_federated_config([_resolve_config_path(str(config))], run_config_flags(context.run_config))


def _timeouts(context) -> dict[str, float]:
    rc = context.run_config
    return {"reply_timeout": float(rc.get("reply-timeout", 3600.0)),
            "query_timeout": float(rc.get("query-timeout", 60.0)),
            "wait_timeout": float(rc.get("wait-timeout", 300.0))}


def deployed_client(context, kind: str):
    """The ClientApp of a deployed SuperNode: a ``query`` needs only the records, a ``train`` the models."""
    if kind not in _DEPLOYED:
        from .app import DeviceRecords, make_client_app

        args, fl = deployed_configs(context)
        if kind == "train":
            from .local_training import make_local_step

            local_train = make_local_step(args, fl)
        else:
            def local_train(*_a, **_k):  # a query process never trains
                raise RuntimeError("query-only ClientApp")
        _DEPLOYED[kind] = make_client_app(local_train, DeviceRecords(fl, None))
    return _DEPLOYED[kind]


def make_deployment_apps(load_configs=None):
    """``(server_app, client_app)``: Flower apps that read the run's configs from the Flower run config.
    (``load_configs`` is accepted for compatibility and ignored: the loader is :func:`deployed_configs`.)"""
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    client = ClientApp()
    server = ServerApp()

    @client.query()
    def _query(msg, context):
        return deployed_client(context, "query")(msg, context)

    @client.train()
    def _train(msg, context):
        return deployed_client(context, "train")(msg, context)

    @server.main()
    def _main(grid, context):
        from .simulation import FederatedRun

        args, fl = deployed_configs(context)
        run = FederatedRun(args, fl, local_train=None, name=None, engine="deployment",
                           strategy_options=_timeouts(context))  # the devices run their own ClientApp
        run.server(grid, context)
        run.finish()

    return server, client


def __getattr__(name):  # Flower imports server_app / client_app; `distill --help` stays free of flwr
    if name in ("server_app", "client_app"):
        server, client = make_deployment_apps()
        globals().update(server_app=server, client_app=client)
        return globals()[name]
    raise AttributeError(name)


# ---- a local deployment: certificates, device keys, device data ------------------------------------------
def _write(path: str, data: bytes, mode: int = 0o644) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)


def make_tls(directory: str, hosts=("127.0.0.1", "localhost"), days: int = 2) -> dict[str, str]:
    """A throw-away CA (``ca.crt``) and a server certificate for ``hosts`` signed by it
    (``server.pem`` / ``server.key``), with Python's ``cryptography`` (a dependency of Flower)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fair-distill throw-away CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False),
                         critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP384R1())
    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = {"ca": os.path.join(directory, "ca.crt"), "cert": os.path.join(directory, "server.pem"),
             "key": os.path.join(directory, "server.key")}
    _write(paths["ca"], ca.public_bytes(pem))
    _write(paths["cert"], cert.public_bytes(pem))
    _write(paths["key"], key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()), 0o600)
    return paths


def make_node_key(path: str) -> str:
    """A SuperNode's authentication key pair: ``path`` (OpenSSH private key, P-384) and ``path.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    _write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                   serialization.NoEncryption()), 0o600)
    _write(path + ".pub", key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                        serialization.PublicFormat.OpenSSH) + b"\n")
    return path


def write_device_files(args, fl, directory: str) -> list[str]:
    """Each device's records (its simulated partition, in stream order), one text a line: ``device-N.txt``."""
    from .devices import DeviceData
    from .simulation import load_corpus

    seed = args.seed if fl.seed is None else fl.seed
    train, _ = load_corpus(args)
    data = DeviceData(train, fl, seed)
    paths = []
    for d in range(fl.num_devices):
        path = os.path.join(directory, f"device-{d}.txt")
        texts = [data.texts[i].replace("\n", " ") for i in data.streams[d]]
        _write(path, ("\n".join(texts) + "\n").encode("utf-8"))
        paths.append(path)
    return paths


def prepare_local_deployment(directory: str, config: str, flags: list[str], extra_keys: int = 1) -> dict:
    """TLS files, ``num_devices`` registered keys (+ ``extra_keys`` unregistered ones) and device data."""
    from .config import load_federated_config

    os.makedirs(directory, exist_ok=True)
    args, fl = load_federated_config([config], flags)
    tls = make_tls(directory)
    keys = [make_node_key(os.path.join(directory, f"node-{d}.key")) for d in range(fl.num_devices)]
    rogue = [make_node_key(os.path.join(directory, f"unregistered-{i}.key")) for i in range(extra_keys)]
    data = write_device_files(args, fl, directory)
    from .local_training import process_models

    process_models(args)  # creates a builtin teacher's cache now, not in every device's first process at once
    return {"tls": tls, "keys": keys, "unregistered_keys": rogue, "data": data, "num_devices": fl.num_devices}


def flwr_run_command(superlink: str, config: str, flags: list[str], app_dir: str, connection: str = "distill",
                     stream: bool = True) -> list[str]:
    """The ``flwr run`` command line that submits this job through the Flower connection ``connection`` (see
    :func:`write_flower_connection`; ``superlink`` is its address). A config inside ``app_dir`` travels in the
    app bundle and is named relative to it; any other must exist at the same path where the apps run."""
    path = os.path.abspath(config)
    inside = os.path.relpath(path, os.path.abspath(app_dir))
    if not inside.startswith(".."):  # in the app bundle (configs/): found on every machine of the run
        path = inside
    if '"' in path + shlex.join(flags):
        from ..errors import ConfigError

        raise ConfigError("flwr run's --run-config cannot carry a double quote: remove it from the path and flags.")
    run_config = f"config={_toml_str(path)} overrides={_toml_str(shlex.join(flags))}"
    return ["flwr", "run", app_dir, connection, "--run-config", run_config] + (["--stream"] if stream else [])


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_flower_connection(flwr_home: str, superlink: str, root_certificates: str | None,
                            name: str = "distill") -> str:
    """``FLWR_HOME/config.toml`` with one SuperLink connection ``name`` (TLS, verified against
    ``root_certificates``; the system's CAs when None)."""
    os.makedirs(flwr_home, exist_ok=True)
    lines = ["[superlink]", f"default = {_toml_str(name)}", "", f"[superlink.{name}]",
             f"address = {_toml_str(superlink)}"]
    if root_certificates:
        lines.append(f"root-certificates = {_toml_str(os.path.abspath(root_certificates))}")
    path = os.path.join(flwr_home, "config.toml")
    _write(path, ("\n".join(lines) + "\n").encode("utf-8"))
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m distill.federated.deployment prepare DIR CONFIG [--flag value ...]``: print the device count."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 3 or argv[0] != "prepare":
        print("usage: python -m distill.federated.deployment prepare DIR CONFIG [--key value ...]", file=sys.stderr)
        return 2
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    info = prepare_local_deployment(argv[1], argv[2], argv[3:])
    print(info["num_devices"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
