"""The composition root's list of services: where their code, migrations and app live."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omnistock.platform.consumer import Subscription


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    name: str
    package: str
    app_factory: str  # "module:function" building the FastAPI app
    subscriptions: str | None = None  # "module:function" returning its consumer subscriptions
    # "module:function" taking the host to bind, answering why serving there is unsafe, if it is
    serve_check: str | None = None

    @property
    def schema(self) -> str:
        return self.name.replace("-", "_")

    def build_app(self, **kwargs: Any) -> Any:
        return _load(self.app_factory)(**kwargs)

    def refusal_to_serve(self, host: str) -> str | None:
        if self.serve_check is None:
            return None
        refusal: str | None = _load(self.serve_check)(host)
        return refusal

    def load_subscriptions(self) -> list[Subscription]:
        if self.subscriptions is None:
            return []
        result: list[Subscription] = _load(self.subscriptions)()
        return result


def _load(target: str) -> Callable[..., Any]:
    module, _, attribute = target.partition(":")
    loaded: Callable[..., Any] = getattr(importlib.import_module(module), attribute)
    return loaded


SERVICES: dict[str, ServiceInfo] = {
    info.name: info
    for info in [
        ServiceInfo(
            "demo",
            "omnistock.demo",
            "omnistock.demo.api:build_app",
            "omnistock.demo.consumers:subscriptions",
        ),
        ServiceInfo("inventory", "omnistock.inventory", "omnistock.inventory.api:build_app"),
        ServiceInfo("pricing", "omnistock.pricing", "omnistock.pricing.api:build_app"),
        ServiceInfo(
            "payments",
            "omnistock.payments",
            "omnistock.payments.api:build_app",
            serve_check="omnistock.payments.api:refusal_to_serve",
        ),
        ServiceInfo("orders", "omnistock.orders", "omnistock.orders.api:build_app"),
        ServiceInfo("storefront", "omnistock.storefront", "omnistock.storefront.api:build_app"),
        ServiceInfo(
            "customer-sync", "omnistock.customer_sync", "omnistock.customer_sync.api:build_app"
        ),
        ServiceInfo(
            "loyalty",
            "omnistock.loyalty",
            "omnistock.loyalty.api:build_app",
            "omnistock.loyalty.consumers:subscriptions",
        ),
        ServiceInfo(
            "collection-points",
            "omnistock.collection_points",
            "omnistock.collection_points.api:build_app",
        ),
    ]
}
