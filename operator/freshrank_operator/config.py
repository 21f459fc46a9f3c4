"""The operator's own settings (flags > FRESHRANK_* env > defaults via core.settings)."""

from __future__ import annotations

from freshrank.core.settings import CommonSettings, opt
from freshrank_operator.render import DEFAULT_IMAGE

__all__ = ["OperatorConfig"]


class OperatorConfig(CommonSettings):
    namespaces: str = opt("", "comma-separated namespaces to watch; empty watches all")
    standalone: bool = opt(
        True,
        "run without Kopf peering; false needs the kopf.dev peering CRDs (for several "
        "replicas use --leader-election instead)",
    )
    leader_election: bool = opt(
        False, "run Kopf only while holding the Lease (several replicas, one active)"
    )
    lease_name: str = opt("freshrank-operator", "name of the leader-election Lease")
    lease_seconds: int = opt(15, "a standby takes over after this long without a renewal")
    pod_name: str = opt("", "this replica's identity in the Lease; empty: the host name")
    pod_namespace: str = opt(
        "",
        "namespace the operator runs in (the chart sets it from the pod); lets its pods "
        "through each CR's NetworkPolicy to scrape the trainer, and holds the leader Lease; "
        "empty: any namespace (leader election then needs it set)",
    )
    peering_name: str = opt("freshrank", "Kopf peering object name when not standalone")
    metrics_port: int = opt(8090, "port for the operator's /healthz, /readyz and /metrics")
    metrics_host: str = opt("0.0.0.0", "address the metrics/health server binds")
    service_image: str = opt(DEFAULT_IMAGE, "image of the freshrank services when the CR has none")
    api_server: str = opt(
        "", "Kubernetes API URL (tests/emulator); empty uses in-cluster/kubeconfig"
    )
    kubeconfig: str = opt(
        "", "kubeconfig file; empty: in-cluster, else $KUBECONFIG (read at login), ~/.kube/config"
    )
    tick_seconds: float = opt(5.0, "how often status is refreshed and the autoscaler considered")
    kafka_timeout_seconds: float = opt(10.0, "timeout of Kafka admin calls when ensuring topics")
    retry_seconds: float = opt(30.0, "delay before retrying a reconcile that hit a fixable problem")
    ensure_topics: bool = opt(True, "create <name>.events and <name>.events.dlq on reconcile")
    scanning: bool = opt(True, "let Kopf watch CRDs appear (disable on API servers without them)")

    @property
    def namespace_list(self) -> list[str]:
        return [n.strip() for n in self.namespaces.split(",") if n.strip()]
