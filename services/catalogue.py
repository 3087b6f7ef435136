"""The service catalogue: every service of the mesh, once.

Read by the local launcher (services/localmesh), by the edge's configuration (Envoy:
routes, clusters, rate-limit classes) and by the Helm chart's generator
(`python -m services.chart`, run by `make gen`), so that `make run` and a cluster run
the same services, with the same variables, behind the same edge.

A service's environment is declared here as variables and what each holds
(`Setting`); each deployment fills the settings its own way: the launcher with
loopback ports and files in its run folder, the chart with pod names, Service DNS
names, Secrets and ConfigMaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from services.gateway import edge_policy as gateway_edge_policy
from services.runtime.auth import SERVICE_TOKEN_FILE_VARIABLE
from services.transaction import edge_policy as transaction_edge_policy
from services.user import edge_policy as user_edge_policy

# Ports inside a container (a pod has the ports to itself; locally each instance gets
# free ones instead).
CONTAINER_GRPC_PORT = 50051
CONTAINER_METRICS_PORT = 9464


class Setting(StrEnum):
    """What a service's environment variable holds."""

    GRPC_ADDRESS = "grpc_address"  # host:port to serve gRPC on
    METRICS_ADDRESS = "metrics_address"  # host:port of GET /metrics
    INSTANCE_ID = "instance_id"  # this instance's name, in logs and metrics
    REDIS_URL = "redis_url"
    DATABASE_URL = "database_url"  # the service's own database
    SERVICE_TOKEN_FILE = "service_token_file"  # noqa: S105 (the internal calls' credential)
    SIGNING_KEY_FILE = "signing_key_file"  # the JWT signing key (PEM)
    LIMITS_FILE = "limits_file"  # the rate-limit classes (YAML)
    INSTANCES = "instances"  # how many instances share the limits
    SANDBOX_WEBHOOK_URL = "sandbox_webhook_url"  # where the sandbox delivers webhooks
    SANDBOX_WEBHOOK_SECRET = "sandbox_webhook_secret"  # noqa: S105 (what it holds)
    SERVICE_TARGET = "service_target"  # gRPC target of another service (`service`)


@dataclass(frozen=True)
class Variable:
    name: str
    setting: Setting
    service: str | None = None  # SERVICE_TARGET: the service called


@dataclass(frozen=True)
class Resources:
    """What one instance asks of a node: CPU (request) and memory (request and limit)."""

    cpu: str
    memory: str


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the mesh."""

    name: str  # "user": cluster "user_grpc", instances "user-1", "user-2"
    module: str  # "services.user": run as `python -m <module> serve|migrate`
    env_prefix: str  # "USER_": prefix of the service's environment variables
    database: str | None  # its own database (None: needs none)
    grpc_services: tuple[str, ...]  # the first one is the one health checks ask about
    public_methods: tuple[str, ...] = ()  # gRPC paths callable without a JWT
    idempotent_methods: tuple[str, ...] = ()  # gRPC paths Envoy may retry freely
    money_methods: tuple[str, ...] = ()  # gRPC paths in the stricter rate-limit class
    unlimited_methods: tuple[str, ...] = ()  # gRPC paths never rate-limited
    instances: int = 2
    # Services this one calls directly (client-side round robin over their
    # instances): each gets <PREFIX><NAME>_SERVICE_TARGET in the environment.
    calls: tuple[str, ...] = ()
    # Only the issuer of access tokens gets the private signing key.
    signs_tokens: bool = False
    # Behind the edge as an upstream (False: a helper Envoy calls, like rate limiting).
    routed: bool = True
    # Gets the rate-limit classes file (<PREFIX>CONFIG_FILE).
    reads_limits: bool = False
    # Runs the sandbox payment provider: gets where its webhooks go (the edge) and
    # their signing secret (<PREFIX>SANDBOX_WEBHOOK_URL / _SECRET).
    runs_sandbox: bool = False
    resources: Resources = Resources(cpu="100m", memory="256Mi")
    # Its database may be several (the ledger's shards: DATABASE_URL lists them).
    sharded: bool = False

    @property
    def cluster(self) -> str:
        """Its cluster at the edge."""
        return f"{self.name}_grpc"

    @property
    def health_service(self) -> str:
        """The gRPC service name its health checks ask about."""
        return self.grpc_services[0]

    def variables(self) -> tuple[Variable, ...]:
        """Every variable of its environment that a deployment must set (the others,
        timeouts and the like, have defaults in the service's settings)."""
        p = self.env_prefix
        found = [
            Variable(f"{p}GRPC_ADDRESS", Setting.GRPC_ADDRESS),
            Variable(f"{p}METRICS_ADDRESS", Setting.METRICS_ADDRESS),
            Variable(f"{p}INSTANCE_ID", Setting.INSTANCE_ID),
            Variable(f"{p}REDIS_URL", Setting.REDIS_URL),
            Variable(SERVICE_TOKEN_FILE_VARIABLE, Setting.SERVICE_TOKEN_FILE),
        ]
        if self.database:
            found.append(Variable(f"{p}DATABASE_URL", Setting.DATABASE_URL))
        if self.signs_tokens:
            found.append(Variable(f"{p}JWT_SIGNING_KEY_FILE", Setting.SIGNING_KEY_FILE))
        if self.reads_limits:
            found.append(Variable(f"{p}CONFIG_FILE", Setting.LIMITS_FILE))
            # Each decides from its fair share of every limit while Redis is out.
            found.append(Variable(f"{p}INSTANCES", Setting.INSTANCES))
        if self.runs_sandbox:
            found.append(Variable(f"{p}SANDBOX_WEBHOOK_URL", Setting.SANDBOX_WEBHOOK_URL))
            found.append(Variable(f"{p}SANDBOX_WEBHOOK_SECRET", Setting.SANDBOX_WEBHOOK_SECRET))
        found += [
            Variable(f"{p}{callee.upper()}_SERVICE_TARGET", Setting.SERVICE_TARGET, callee)
            for callee in self.calls
        ]
        return tuple(found)


USER = ServiceSpec(
    name="user",
    module="services.user",
    env_prefix="USER_",
    database="users",
    grpc_services=(user_edge_policy.SERVICE_NAME,),
    public_methods=user_edge_policy.PUBLIC_METHODS,
    idempotent_methods=user_edge_policy.IDEMPOTENT_METHODS,
    unlimited_methods=user_edge_policy.UNLIMITED_METHODS,
    signs_tokens=True,
    # Password hashing (Argon2) is its heaviest work.
    resources=Resources(cpu="250m", memory="256Mi"),
)

TRANSACTION = ServiceSpec(
    name="transaction",
    module="services.transaction",
    env_prefix="TRANSACTION_",
    database="ledger",
    grpc_services=(transaction_edge_policy.SERVICE_NAME,),
    public_methods=transaction_edge_policy.PUBLIC_METHODS,
    idempotent_methods=transaction_edge_policy.IDEMPOTENT_METHODS,
    money_methods=transaction_edge_policy.MONEY_METHODS,
    calls=("user", "gateway"),
    resources=Resources(cpu="250m", memory="256Mi"),
    sharded=True,
)

GATEWAY = ServiceSpec(
    name="gateway",
    module="services.gateway",
    env_prefix="GATEWAY_",
    database="payments",
    # Only the webhook receiver is routed; the payment API is internal.
    grpc_services=(gateway_edge_policy.WEBHOOK_SERVICE_NAME,),
    public_methods=gateway_edge_policy.PUBLIC_METHODS,
    # Providers retry deliveries that are refused: never rate-limit them.
    unlimited_methods=gateway_edge_policy.PUBLIC_METHODS,
    calls=("transaction",),
    runs_sandbox=True,
)

RATELIMIT = ServiceSpec(
    name="ratelimit",
    module="services.ratelimit",
    env_prefix="RATELIMIT_",
    database=None,
    grpc_services=("envoy.service.ratelimit.v3.RateLimitService",),
    routed=False,
    reads_limits=True,
    resources=Resources(cpu="100m", memory="128Mi"),
)

SERVICES: tuple[ServiceSpec, ...] = (USER, TRANSACTION, GATEWAY, RATELIMIT)


def service(name: str) -> ServiceSpec:
    """The service called `name` (KeyError naming the known ones otherwise)."""
    for spec in SERVICES:
        if spec.name == name:
            return spec
    raise KeyError(f"no service {name!r} (known: {', '.join(s.name for s in SERVICES)})")
