"""Telling other systems: the outbox, webhook subscriptions and their fan-out, and the dispatcher
that delivers them."""
