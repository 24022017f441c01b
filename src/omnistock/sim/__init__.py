"""The whole platform under realistic retail traffic: the fleet of services as processes, a
seeded world of brands, markets, locations and SKUs, the traffic simulator, the cancellation
experiment, fault drills with an invariant checker, and the report. It speaks only the public
HTTP APIs and the documented topics, as a retailer's own systems would; the invariant checker
alone reads the services' databases, as an auditor would."""
