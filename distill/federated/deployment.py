"""A real deployment: the Flower ServerApp and ClientApp that ``flwr run`` starts on a SuperLink and SuperNodes.

A Flower app project names them in its ``pyproject.toml``::

    [tool.flwr.app.components]
    serverapp = "distill.commands.federated:server_app"
    clientapp = "distill.commands.federated:client_app"

    [tool.flwr.app.config]
    config = "configs/tiny-fl.yaml"     # the `distill federated` YAML; optionally output-dir = "..."

(``distill federated`` owns the YAML reading and hands its loader to :func:`make_deployment_apps`.) SuperNodes
are started with ``--node-config "partition-id=N data-file=PATH"``. Each process reads the config once: a
SuperNode's ClientApp runs :class:`~distill.federated.local_training.LocalDistillation` on its own records
(:class:`~distill.federated.app.DeviceRecords`); the ServerApp runs the
:class:`~distill.federated.simulation.FederatedRun` server and writes its outputs.
"""

from __future__ import annotations

from collections.abc import Callable

#: ``(config path, flags) -> (DistillationConfig, FederatedConfig)``
ConfigsLoader = Callable[[str, list[str]], tuple]

#: The ClientApp of this process, built on the first message.
_DEPLOYED: dict[str, object] = {}


def deployed_configs(context, load_configs: ConfigsLoader):
    """The run's configs from the Flower run config: ``config`` (the YAML) and optionally ``output-dir``."""
    config = context.run_config.get("config")
    if not config:
        from ..errors import ConfigError

        raise ConfigError("The Flower run config has no 'config' key: set config = \"path/to/config.yaml\" under "
                          "[tool.flwr.app.config].")
    extra = ["--output_dir", str(context.run_config["output-dir"])] if "output-dir" in context.run_config else []
    return load_configs(str(config), extra)


def deployed_client(context, load_configs: ConfigsLoader):
    """The ClientApp of a deployed SuperNode (built once per process from the run config)."""
    if "client" not in _DEPLOYED:
        from .app import DeviceRecords, make_client_app
        from .local_training import make_local_step

        args, fl = deployed_configs(context, load_configs)
        _DEPLOYED["client"] = make_client_app(make_local_step(args, fl), DeviceRecords(fl, None))
    return _DEPLOYED["client"]


def make_deployment_apps(load_configs: ConfigsLoader):
    """``(server_app, client_app)``: Flower apps that read the run's configs with ``load_configs``."""
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    client = ClientApp()
    server = ServerApp()

    @client.query()
    def _query(msg, context):
        return deployed_client(context, load_configs)(msg, context)

    @client.train()
    def _train(msg, context):
        return deployed_client(context, load_configs)(msg, context)

    @server.main()
    def _main(grid, context):
        from .simulation import FederatedRun

        args, fl = deployed_configs(context, load_configs)
        run = FederatedRun(args, fl, local_train=None, name=None)  # the devices run their own ClientApp
        run.server(grid, context)
        run.finish()

    return server, client
