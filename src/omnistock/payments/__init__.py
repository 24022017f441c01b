"""The payments service: payment intents, their PSP operations and webhooks, a PSP simulator."""

SERVICE = "payments"
