"""Outgoing webhooks: the `WebhookSender` port over httpx, behind the address guard."""

from adapters.webhooks.guard import Resolver, system_resolver
from adapters.webhooks.sender import HttpWebhookSender

__all__ = ["HttpWebhookSender", "Resolver", "system_resolver"]
